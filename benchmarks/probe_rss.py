"""Does the step probe move the process's peak RSS? The same run with and without it.

    python benchmarks/probe_rss.py            # digits MLP and SmolLM2 + LoRA (about 6 minutes)
    python benchmarks/probe_rss.py --no-lm    # the MLP only (seconds)

Each run is its own process (a peak RSS is a process's), pinned to one thread; the probe's
profiler records must not show up in ``peak_rss_bytes`` (see ``beyondbp.measure.rss_left_out``).
Writes benchmarks/results/probe_rss.{md,json}.
"""

from __future__ import annotations

import json
import subprocess
import sys

from beyondbp.bench.results import write_result

CASES = {
    "mlp": dict(rule="bp", data="digits", net="mlp:1024x4", epochs=1, batch_size=256),
    "lm": dict(rule="lora", data="arith-ood", net="lm", epochs=1, max_steps=4, batch_size=8,
               eval_batch_size=32, data_dir="../shared/data",
               options={"r": 16, "modules": "all-linear", "warmup_steps": 10}),
}  # fmt: skip

CHILD = """
import json, sys, torch
torch.set_num_threads(1)
import beyondbp as bb
kw = json.loads(sys.argv[1])
r = bb.train(kw.pop("rule"), kw.pop("data"), kw.pop("net"), store=False, progress=False,
             energy=False, seed=0, **kw)
print(json.dumps({k: r.metrics.get(k) for k in
                  ("peak_rss_bytes", "peak_rss_method", "peak_step_bytes", "step_time_s")}))
"""


def run(case: dict, probe: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps({**case, "probe": probe})],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    cases = {k: v for k, v in CASES.items() if k != "lm" or "--no-lm" not in sys.argv}
    rows, lines = (
        [],
        [
            "# Peak RSS with and without the step probe",
            "",
            "| case | run | peak RSS MiB (no probe) | peak RSS MiB (probe) | change % | step memory MiB |",
            "|---|---|---:|---:|---:|---:|",
        ],
    )
    for name, case in cases.items():
        for rep in (1, 2):
            off, on = run(case, False), run(case, True)
            change = 100 * (on["peak_rss_bytes"] / off["peak_rss_bytes"] - 1)
            rows.append({"case": name, "rep": rep, "no_probe": off, "probe": on})
            lines.append(
                f"| {name}: {case['rule']} {case['data']} {case['net']} | {rep} "
                f"| {off['peak_rss_bytes'] / 2**20:.1f} | {on['peak_rss_bytes'] / 2**20:.1f} "
                f"| {change:+.1f} | {on['peak_step_bytes'] / 2**20:.1f} |"
            )
            print(lines[-1], flush=True)
    lines += ["", f"Peak RSS: {rows[-1]['probe']['peak_rss_method']}."]
    write_result("probe_rss", lines, {"cases": CASES, "rows": rows})


if __name__ == "__main__":
    main()
