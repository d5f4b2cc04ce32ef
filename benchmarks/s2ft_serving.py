"""Serving several fine-tuned adapters on one model: S²FT's in-place switch against LoRA's
merge / unmerge, and a mixed batch (each example its own adapter) served in one pass.

    BEYONDBP_THREADS=1 taskset -c 0 python benchmarks/s2ft_serving.py

Four adapters of each kind on SmolLM2-135M-Instruct: S²FT with the released recipe (3 % of the
FFN channels, down_proj; each adapter its own random selection) and LoRA r = 16 on q_proj and
v_proj through peft. The adapters' values are random (timing does not depend on them; the
outputs are checked against each adapter applied alone). Writes
``benchmarks/results/s2ft2024-serving.md``.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from beyondbp.nets.lm import CausalLM
from beyondbp.s2ft import S2FTConfig, get_model

OUT = Path(__file__).parent / "results" / "s2ft2024-serving.md"
ADAPTERS = ["a", "b", "c", "d"]
REPEATS = 20


def timed(fn, repeats: int = REPEATS) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def s2ft_server(base: torch.nn.Module, tmp: Path):
    for i, name in enumerate(ADAPTERS):
        trained = get_model(copy.deepcopy(base), S2FTConfig(seed=i))
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in trained.trainable_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        trained.save_adapter(tmp / name)
    server = get_model(base, S2FTConfig(seed=99))
    for name in ADAPTERS:
        server.load_adapter(tmp / name, name)
    return server


def lora_server(base: torch.nn.Module):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(base, config, adapter_name=ADAPTERS[0])
    for name in ADAPTERS[1:]:
        model.add_adapter(name, config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    return model.eval()


def main() -> None:
    import tempfile

    threads = int(os.environ.get("BEYONDBP_THREADS", "1"))
    torch.set_num_threads(threads)
    ids = torch.randint(0, 49152, (8, 64), generator=torch.Generator().manual_seed(0))
    names = [ADAPTERS[i % 4] for i in range(8)]  # a mixed batch: two examples per adapter
    rows = []
    with tempfile.TemporaryDirectory() as d:
        s2 = s2ft_server(CausalLM.pretrained().model.eval(), Path(d))
        with torch.no_grad():
            switch = timed(lambda: [s2.switch(n) for n in ADAPTERS]) / len(ADAPTERS)
            s2.switch(None)
            base_fwd = timed(lambda: s2(input_ids=ids), 5)
            with s2.serving(names):
                mixed = timed(lambda: s2(input_ids=ids), 5)
                out = s2(input_ids=ids).logits
            s2.switch("c")  # the mixed batch's rows of adapter c equal adapter c alone
            alone = s2(input_ids=ids).logits
            s2.switch(None)
        err = float((out[2] - alone[2]).abs().max())
        rows.append(("S²FT (3 % down_proj)", switch, base_fwd, mixed, err))
    lora = lora_server(CausalLM.pretrained().model)
    with torch.no_grad():

        def lora_switch() -> None:
            for n in ADAPTERS:
                lora.set_adapter(n)
                lora.merge_adapter()
                lora.unmerge_adapter()

        switch = timed(lora_switch) / len(ADAPTERS)
        with lora.disable_adapter():
            base_fwd = timed(lambda: lora(input_ids=ids), 5)
        mixed = timed(lambda: lora(input_ids=ids, adapter_names=names), 5)
        out = lora(input_ids=ids, adapter_names=names).logits
        lora.set_adapter("c")
        alone = lora(input_ids=ids).logits
    err = float((out[2] - alone[2]).abs().max())
    rows.append(("LoRA r=16 (q_proj, v_proj)", switch, base_fwd, mixed, err))

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    lines = [
        "# s2ft2024-serving: switching between and serving 4 adapters on SmolLM2-135M-Instruct",
        "",
        f"Command: `BEYONDBP_THREADS={threads} taskset -c 0 python benchmarks/s2ft_serving.py`; "
        f"commit {commit}; {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, {threads} thread(s).",
        "",
        "Switch: median time to make one adapter the active one in the weights (S²FT: "
        "`switch()`, which subtracts the previous adapter's slices and adds the new one's, "
        "W[:, idx] ± C; LoRA: peft's `set_adapter` + `merge_adapter` + `unmerge_adapter`, "
        "W ± BA), over 20 rounds of the 4 adapters. Mixed batch: one forward pass of 8 "
        "sequences of 64 tokens, two per adapter (S²FT: `serving()`, gather / scatter of each "
        "adapter's rows; LoRA: peft's `adapter_names=`), against the same batch on the base "
        "weights. |Δ|: the largest difference between a mixed-batch row's logits and that "
        "adapter alone (a check). Adapter values are random; timing does not depend on them.",
        "",
        "| method | switch (ms) | base forward (s) | mixed-batch forward (s) | overhead | |Δ| |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, sw, base_fwd, mixed, err in rows:
        lines.append(f"| {name} | {1000 * sw:.2f} | {base_fwd:.3f} | {mixed:.3f} | "
                     f"{mixed / base_fwd:.2f}x | {err:.1e} |")  # fmt: skip
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
