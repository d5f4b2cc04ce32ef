"""Population rules on episodic tasks: Deep GA (and random search), OpenAI-ES and EvoTorch's PGPE
on CartPole-v1 and Acrobot-v1, and novelty search against reward-only Deep GA on the deceptive
maze.

    python benchmarks/rl_population.py [--tasks cartpole,acrobot,maze,atari] [--seeds 0,1,2]

Each cell is one ``beyondbp.train`` run (``batch_size=1``: one episode per individual and
generation) for a fixed number of generations (``max_steps``), tested on the task's 200 test
episodes (the Deep GA protocol; mean return of the elite's greedy policy). Solved: CartPole-v1
mean test return ≥ 475, Acrobot-v1 ≥ −100 (gymnasium's reward thresholds), maze final distance
< 0.5 (return > −0.5), Atari (Breakout, console RAM, 50 individuals for 20 generations: a
reduced budget; ``pip install ale-py``) above uniformly random actions. Writes benchmarks/results/rl_population.{json,md} after every run; a
rerun skips the runs already there; ``--rewrite`` writes the md again from the json. One torch
thread (BEYONDBP_THREADS).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

import beyondbp as bb
from beyondbp.measure import provenance_markdown

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "rl_population.json"

GA = {"population": 200, "truncation": 20, "sigma": 0.05, "elite_candidates": 10,
      "elite_evals": 10}  # fmt: skip
MAZE = {**GA, "sigma": 0.1, "elite_evals": 1}  # deterministic maze: one episode says it all
# (task, data, solved-at, [(method, rule, options, generations)])
CELLS = {
    "cartpole": ("gym:CartPole-v1", 475.0, [
        ("Deep GA", "deep-ga", GA, 100),
        ("random search (Deep GA, T = 0)", "deep-ga", {**GA, "truncation": 0}, 100),
        ("OpenAI-ES", "es", {"algorithm": "openai-es", "popsize": 100, "sigma": 0.1,
                             "lr": 0.05}, 100),
        ("PGPE (EvoTorch)", "es", {"algorithm": "pgpe", "popsize": 100, "sigma": 0.1}, 100),
    ]),
    "acrobot": ("gym:Acrobot-v1", -100.0, [
        ("Deep GA", "deep-ga", GA, 50),
        ("OpenAI-ES", "es", {"algorithm": "openai-es", "popsize": 100, "sigma": 0.1,
                             "lr": 0.05}, 50),
    ]),
    # Atari, reduced budget: RAM observations, 50 individuals, 20 generations (the paper: pixels,
    # 1,000 individuals); "solved" here = above the uniformly random policy's mean
    "atari": ("gym:ALE/Breakout-v5", None, [
        ("Deep GA (RAM, reduced budget)", "deep-ga",
         {"population": 50, "truncation": 10, "sigma": 0.02, "elite_candidates": 5,
          "elite_evals": 3}, 20),
    ]),
    "maze": ("deceptive-maze", -0.5, [
        ("Deep GA, reward only", "deep-ga", MAZE, 300),
        ("Deep GA, novelty search", "deep-ga", {**MAZE, "novelty": 1.0}, 300),
        ("Deep GA, 50/50 reward and novelty", "deep-ga", {**MAZE, "novelty": 0.5}, 300),
    ]),
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="cartpole,acrobot,maze")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--net", default="mlp:32")
    args = ap.parse_args()
    runs = json.loads(OUT.read_text()) if OUT.exists() else []
    done = {(r["task"], r["method"], r["seed"]) for r in runs}
    for task in args.tasks.split(","):
        data, solved_at, methods = CELLS[task]
        for method, rule, options, generations in methods:
            for seed in (int(s) for s in args.seeds.split(",")):
                if (task, method, seed) in done:
                    continue
                r = bb.train(rule, data=data, net=args.net, options=options, seed=seed,
                             epochs=1000, max_steps=generations, batch_size=1, patience=None,
                             store=False, progress=False)  # fmt: skip
                m = r.metrics
                if solved_at is None:  # above a uniformly random policy on the test episodes
                    solved_at = random_policy_return(data)
                runs.append({
                    "task": task, "data": data, "method": method, "rule": rule,
                    "options": options, "seed": seed, "generations": generations,
                    "test_return": m["test_return"], "test_return_std": m["test_return_std"],
                    "solved": m["test_return"] >= solved_at, "solved_at": solved_at,
                    "train_time_s": m["train_time_s"],
                    "curve": [h.get("val_return") for h in r.record.history],
                    "command": " ".join(["python", *sys.argv]),
                })  # fmt: skip
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "curve"}), flush=True)
                tmp = OUT.with_suffix(".tmp")
                tmp.write_text(json.dumps(runs, indent=1))
                tmp.replace(OUT)
                write(runs)


def random_policy_return(data: str) -> float:
    """Mean return of uniformly random actions on the task's 200 test episodes."""
    from beyondbp.data import load_dataset
    from beyondbp.data.envs import rollout

    d = load_dataset(data)
    g = torch.Generator().manual_seed(0)
    returns, _ = rollout(
        lambda o: torch.rand(*o.shape[:2], d.meta.classes, generator=g), d.meta.env, d.test.x, 1
    )
    return float(returns.mean())


def write(runs: list[dict]) -> None:
    md = [
        "# Population rules on episodic tasks",
        "",
        "Policy `mlp:32`; one episode per individual and generation; the elite's greedy policy "
        "tested on the task's 200 test episodes. Solved: CartPole-v1 ≥ 475, Acrobot-v1 ≥ −100, "
        "deceptive maze > −0.5 (final distance to the goal under 0.5; −2 is the trap under the "
        "bar); Atari (console RAM as the observation, reduced budget): above the mean of "
        "uniformly random actions on the same episodes (listed). One CPU thread.",
        "",
        "| task | method | generations | seeds | test return (mean ± std over seeds) | solved "
        "| train time s (mean) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    for (_task, method), rs in groups.items():
        vals = [r["test_return"] for r in rs]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        bar = "" if rs[0]["task"] != "atari" else f" (random policy {rs[0]['solved_at']:.2f})"
        md.append(
            f"| {rs[0]['data']}{bar} | {method} | {rs[0]['generations']} | "
            f"{','.join(str(r['seed']) for r in rs)} | {statistics.mean(vals):.2f} ± {sd:.2f} | "
            f"{sum(r['solved'] for r in rs)}/{len(rs)} | "
            f"{statistics.mean(r['train_time_s'] for r in rs):.1f} |"
        )
    md += ["", "Per run (test return): " + "; ".join(
        f"{r['task']} {r['method']} seed {r['seed']}: {r['test_return']:.2f}" for r in runs
    ), "", "Commands of the runs above: " + "; ".join(
        f"`{c}`" for c in dict.fromkeys(r.get("command", "?") for r in runs)
    ), "", *provenance_markdown(" ".join(["python", *sys.argv]))]  # fmt: skip
    (HERE / "results" / "rl_population.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("BEYONDBP_THREADS", "1")))
    if sys.argv[1:] == ["--rewrite"]:  # the md again from the json, nothing run
        write(json.loads(OUT.read_text()))
    else:
        main()
