"""Convex two-layer ReLU training against the peer library ``scnn`` (pyscnn) and backprop.

For each dataset, on the same data (beyondbp's normalised training split with a bias column),
the same regularisation and the same activation patterns:

- gated ReLU: ``convex-gated`` (monotone FISTA) vs scnn's R-FISTA on scnn's ConvexGatedReLU built
  with our gates;
- ReLU: ``convex-admm`` vs scnn's augmented Lagrangian (AL) on ConvexReLU with our patterns;
- ``convex-scp`` (sampled neurons, lasso) and ``bp`` (Adam on mlp:M, the library defaults) for
  accuracy at the same width M.

Objectives are ours, ½‖·‖² + β Σ‖·‖ (summed loss), β = λ·n·c where λ is scnn's regulariser
strength (scnn divides the squared loss by 2nc). "time to scnn's objective" is the training time
after which our objective first reached scnn's final one (ADMM: at an iterate violating the cone
constraints by at most 1e-3 relative; the final violation is listed). Where scnn's AL was stopped
(``--scnn-time-limit``), its row is its last iterate, and the time is to that iterate's
objective at no larger violation. The column is computed when the table is written, from the
stored rows, so a partial rerun of either side updates it.

    pip install --no-deps pyscnn linalg_backends && pip install tqdm opt_einsum
    python benchmarks/convex_compare.py --data digits,mnist,fashion-mnist [--width 200]
    python benchmarks/convex_compare.py --data mnist --methods admm --admm-epochs 100  # one row

writes benchmarks/results/convex_compare.{json,md} after every measured row (a rerun replaces the
rows it measures again, keeps the others); ``--rewrite`` only rewrites the Markdown from the
JSON. Runs one torch thread (BEYONDBP_THREADS, default 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import beyondbp as bb
from beyondbp.bench.results import write_result
from beyondbp.data import load_dataset
from beyondbp.measure import environment
from beyondbp.rules.convex import design_matrix, patterned, sample_gates

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "convex_compare.json"
ORDER = {"digits": 0, "mnist": 1, "fashion-mnist": 2}  # the table's order of datasets


def objective_gated(X, Y, D, W, beta) -> float:
    r = patterned(X, D, W) - Y
    return 0.5 * float((r * r).sum()) + beta * float(torch.linalg.vector_norm(W, dim=1).sum())


def objective_relu(X, Y, D, V, W, beta) -> tuple[float, float]:
    r = patterned(X, D, V - W) - Y
    reg = torch.linalg.vector_norm(V, dim=1).sum() + torch.linalg.vector_norm(W, dim=1).sum()
    E = (2 * D - 1).T[:, :, None]
    gv = torch.cat([torch.einsum("nd,pdc->pnc", X, B) * E for B in (V, W)])
    violation = float((-gv).clamp_min(0).max()) / max(float(gv.abs().max()), 1e-300)
    return 0.5 * float((r * r).sum()) + beta * float(reg), violation


def ours(rule: str, data: str, width: int, options: dict, epochs: int, data_dir: str) -> dict:
    r = bb.train(rule, data=data, net=f"mlp:{width}", options=options, epochs=epochs,
                 patience=None, data_dir=data_dir, store=False, progress=False)  # fmt: skip
    hist = [(h["train_time_s"], h.get("train_objective"), h.get("train_violation"))
            for h in r.record.history]  # fmt: skip
    last = r.record.history[-1]
    return {
        "test_acc": r.metrics["test_acc"],
        "train_time_s": r.metrics["train_time_s"],
        "objective": last.get("train_objective"),
        "violation": last.get("train_violation"),
        "iterations": len(hist) * options.get("iterations_per_step", 10),
        "curve": hist,
        "stop": r.metrics.get("stop_reason"),
    }


# our solver -> the scnn row it is timed against (a stopped scnn run's row starts the same way)
PEERS = {"convex-gated": "scnn gated (R-FISTA)", "convex-admm": "scnn relu (AL"}


def time_to_peer(r: dict, rows: list[dict]) -> float | None:
    """When our row ``r`` first reached the objective of its scnn row (same data, width, λ) in
    ``rows``: scnn's final objective, or where scnn was stopped (--scnn-time-limit), the objective
    of its last iterate at no larger cone violation than that iterate's. None: never reached, or
    no scnn row."""
    prefix = next(p for m, p in PEERS.items() if r["method"].startswith(m))
    peers = [s for s in rows if s["method"].startswith(prefix) and s.get("objective") is not None
             and (s["data"], s["width"], s["lam"]) == (r["data"], r["width"], r["lam"])]  # fmt: skip
    if not peers:
        return None
    peer = min(peers, key=lambda s: bool(s.get("out_of_time")))  # a finished run first
    tolerance = max(1e-3, peer["violation"]) if peer.get("out_of_time") else 1e-3
    return time_to(r.get("curve") or [], peer["objective"], tolerance)


def time_to(curve: list, target: float | None, max_violation: float = 1e-3) -> float | None:
    """The first training time at which the objective is at most ``target`` (ADMM: at an
    iterate whose cone violation is at most ``max_violation``; its early iterates can sit
    below the optimum by violating the constraints); None without a target."""
    if target is None:
        return None
    for t, obj, violation in curve:
        feasible = violation is None or violation <= max_violation
        if obj is not None and obj <= target * (1 + 1e-6) and feasible:
            return t
    return None


class OutOfTime(Exception):
    pass


def scnn_run(kind: str, X, Y, gates, lam: float, max_iters: int,
             time_limit: float | None = None) -> tuple[Any, float, bool]:  # fmt: skip
    """scnn's solver on our gates: (model, seconds, finished). After ``time_limit`` s the solver
    is stopped and the model holds its iterate at that moment (``finished`` False)."""
    import signal

    import scnn.optimize as scnn_optimize
    from scnn.metrics import Metrics
    from scnn.models import ConvexGatedReLU, ConvexReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import AL, RFISTA

    G = gates.numpy()
    if kind == "gated":
        model = ConvexGatedReLU(G, c=Y.shape[1])
        solver = RFISTA(model, max_iters=max_iters)
    else:
        model = ConvexReLU(G, c=Y.shape[1])
        solver = AL(model, max_primal_iters=max_iters, max_dual_iters=max_iters)

    def out_of_time(signum: int, frame: Any) -> None:
        raise OutOfTime

    # keep a handle on scnn's internal model: its solvers update its weights in place, so a
    # stopped run still has its last iterate
    internal = []
    build = scnn_optimize.build_internal_model

    def keep(*a: Any, **k: Any) -> Any:
        internal.append(build(*a, **k))
        return internal[-1]

    old = signal.signal(signal.SIGALRM, out_of_time)
    scnn_optimize.build_internal_model = keep
    if time_limit:
        signal.setitimer(signal.ITIMER_REAL, time_limit)
    t0 = time.perf_counter()
    finished = True
    try:
        model, _ = optimize_model(model, solver, Metrics(), X.numpy(), Y.numpy(),
                                  regularizer=NeuronGL1(lam), return_convex=True,
                                  unitize_data=False, dtype="float64", seed=0)  # fmt: skip
    except OutOfTime:
        if not internal:
            raise
        finished = False
        model = scnn_optimize.update_public_model(model, internal[-1])
    finally:
        secs = time.perf_counter() - t0
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        scnn_optimize.build_internal_model = build
    return model, secs, finished


def run_dataset(name: str, args: argparse.Namespace) -> list[dict]:
    data = load_dataset(name, args.data_dir)
    X = design_matrix(data.train.x, torch.float64)
    Y = torch.nn.functional.one_hot(data.train.y, data.meta.classes).double()
    Xt = design_matrix(data.test.x, torch.float64)
    n, c = len(X), data.meta.classes
    beta = args.lam * n * c
    M = args.width
    rows: list[dict] = []

    commit = environment("cpu").get("git_commit")

    def row(method: str, **kw: Any) -> None:
        rows.append({"data": name, "method": method, "width": M, "lam": args.lam, "beta": beta,
                     "n": n, "commit": commit, **kw})  # fmt: skip
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "curve"}), flush=True)
        save(name, rows, args)  # each row lands as soon as it is measured

    want = set(args.methods.split(","))

    # gated ReLU: our FISTA vs scnn's R-FISTA on the same gates
    P_g = M // c
    if "scnn-gated" in want:
        gates, _ = sample_gates(X, P_g, seed=0)  # the rule's gates (run seed 0)
        model, secs = scnn_run("gated", X, Y, gates, args.lam, args.max_iters)
        # scnn returns the same gates in another order: use its order
        gates = torch.tensor(model.G)
        D = (X @ gates > 0).double()
        W = torch.tensor(model.parameters[0]).permute(1, 2, 0)  # (c, p, d) -> (p, d, c)
        obj = objective_gated(X, Y, D, W, beta)
        Dt = (Xt @ gates > 0).double()
        acc = float((patterned(Xt, Dt, W).argmax(1) == data.test.y).double().mean())
        row("scnn gated (R-FISTA)", test_acc=acc, train_time_s=secs, objective=obj)
    if "gated" in want:
        g_opts = {"patterns": P_g, "beta": beta, "dtype": "float64"}
        mine = ours("convex-gated", name, M, g_opts, args.epochs, args.data_dir)
        row("convex-gated (ours)", **mine)
    if "scp" in want:
        mine = ours("convex-scp", name, M, {"beta": beta}, args.epochs, args.data_dir)
        row("convex-scp (ours)", **mine)
    if "bp" in want:
        r = bb.train("bp", data=name, net=f"mlp:{M}", epochs=args.bp_epochs,
                     data_dir=args.data_dir, store=False, progress=False)  # fmt: skip
        row(f"bp (Adam, {args.bp_epochs} epochs, patience 10)", test_acc=r.metrics["test_acc"],
            train_time_s=r.metrics["train_time_s"])  # fmt: skip

    # ReLU: our ADMM vs scnn's augmented Lagrangian on the same patterns (scnn's AL last: slow)
    P_r = M // (2 * c)
    if "admm" in want:
        rho = beta if args.rho is None else args.rho
        kappa, alpha = args.constraint_scale, args.relaxation
        a_opts = {"patterns": P_r, "beta": beta, "rho": rho, "constraint_scale": kappa,
                  "relaxation": alpha, "dtype": args.admm_dtype}  # fmt: skip
        mine = ours("convex-admm", name, M, a_opts, args.admm_epochs, args.data_dir)
        label = f"ρ = {rho:.3g}" + ("" if kappa == 1 else f", κ = {kappa:.3g}")
        label += "" if alpha == 1 else f", α = {alpha:g}"
        label += "" if args.admm_dtype == "float64" else f", {args.admm_dtype}"
        row(f"convex-admm (ours, {label})", **mine)
    if "scnn-al" in want:
        gates, _ = sample_gates(X, P_r, seed=0)
        model, secs, finished = scnn_run("relu", X, Y, gates, args.lam, args.max_iters,
                                         args.scnn_time_limit)  # fmt: skip
        D = (X @ torch.tensor(model.G) > 0).double()
        V = torch.tensor(model.parameters[0]).permute(1, 2, 0)
        Wn = torch.tensor(model.parameters[1]).permute(1, 2, 0)
        obj, violation = objective_relu(X, Y, D, V, Wn, beta)
        pred = torch.einsum("nd,pdc->pnc", Xt, V).relu().sum(0)
        pred = pred - torch.einsum("nd,pdc->pnc", Xt, Wn).relu().sum(0)
        acc = float((pred.argmax(1) == data.test.y).double().mean())
        label = "scnn relu (AL)" if finished else "scnn relu (AL, stopped: its last iterate)"
        row(label, test_acc=acc, train_time_s=secs, objective=obj, violation=violation,
            out_of_time=not finished)  # fmt: skip
    return rows


def fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def write(rows: list[dict], command: str) -> None:
    md = [
        "# Convex two-layer ReLU training vs scnn and backprop",
        "",
        "Same data, regularisation and activation patterns for ours and scnn's solvers; bp at the "
        "same width. Objective: ½‖·‖² + β Σ‖·‖ summed over the training split, divided by n here "
        "(β = λ·n·c). Times are training only (no validation passes), one CPU thread. "
        '"> T": the solver was stopped at T seconds (--scnn-time-limit) without finishing; its '
        "row is the iterate it had then (objective, cone violation and accuracy of that iterate), "
        "and our time to its objective is at no larger cone violation than that iterate's.",
        "",
        "| data | width | λ | method | test acc % | train time s | objective / n | violation "
        "| iterations | time to scnn's objective s | commit |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        obj = r.get("objective")
        md.append(
            f"| {r['data']} | {r['width']} | {r['lam']:g} | {r['method']} | "
            f"{fmt(r['test_acc'] and 100 * r['test_acc'], '.2f')} | "
            f"{'> ' if r.get('out_of_time') else ''}{r['train_time_s']:.1f} | "
            f"{fmt(obj / r['n'] if obj is not None else None, '.6g')} | "
            f"{fmt(r.get('violation'), '.1e')} | {fmt(r.get('iterations'), 'd')} | "
            f"{fmt(time_to_peer(r, rows), '.1f') if r['method'].startswith(tuple(PEERS)) else ''} | "
            f"{(r.get('commit') or '-')[:7]} |"
        )
    md += ["", "Each row was measured at the commit it names; the last run's provenance:"]
    write_result("convex_compare", md, command=command)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits")
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--lam", type=float, default=1e-4, help="scnn's λ (ours: β = λ n c)")
    ap.add_argument("--rho", type=float, default=None, help="ADMM's ρ (default: ρ = β)")
    ap.add_argument("--epochs", type=int, default=100, help="FISTA: 10 iterations per epoch")
    ap.add_argument("--constraint-scale", type=float, default=1.0,
                    help="ADMM's κ (cone constraints as κ G u ≥ 0; 1: the paper's)")  # fmt: skip
    ap.add_argument("--relaxation", type=float, default=1.0,
                    help="ADMM's over-relaxation α (1: the paper's plain ADMM)")  # fmt: skip
    ap.add_argument("--admm-epochs", type=int, default=30, help="ADMM: 10 iterations per epoch")
    ap.add_argument("--admm-dtype", default="float64", choices=["float64", "float32"],
                    help="ADMM's precision (float32: 2-3x faster where ρ and κ keep the "
                    "system well conditioned; results/admm_variants.md)")  # fmt: skip
    ap.add_argument("--bp-epochs", type=int, default=30)
    ap.add_argument("--max-iters", type=int, default=10000, help="scnn's iteration limit")
    ap.add_argument(
        "--scnn-time-limit",
        type=float,
        default=None,
        help="stop scnn's AL after this many seconds (the row says it did not finish)",
    )
    ap.add_argument("--methods", default="scnn-gated,gated,scp,bp,admm,scnn-al",
                    help="the rows to measure (a partial rerun keeps the other stored rows; "
                    "time to scnn's objective then uses scnn's stored row)")  # fmt: skip
    ap.add_argument("--rewrite", action="store_true",
                    help="only rewrite the Markdown table from the stored JSON")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BEYONDBP_THREADS", "1")))
    if args.rewrite:
        write(json.loads(OUT.read_text()), " ".join(["python", *sys.argv]))
        return
    for name in args.data.split(","):
        run_dataset(name, args)
    print((HERE / "results" / "convex_compare.md").read_text())


def save(name: str, new: list[dict], args: argparse.Namespace) -> None:
    """Replace the stored rows of the same dataset, method, width and λ by ``new`` (atomically),
    keep the others."""
    rows = json.loads(OUT.read_text()) if OUT.exists() else []

    def key(r: dict) -> tuple:
        return r["data"], r["method"], r["width"], r["lam"]

    mine = {key(r) for r in new}
    rows = sorted([r for r in rows if key(r) not in mine] + new,
                  key=lambda r: (ORDER.get(r["data"], 9), -r["lam"]))  # fmt: skip
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(OUT)
    write(rows, " ".join(["python", *sys.argv]))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
