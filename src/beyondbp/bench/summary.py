"""Summaries of runs: mean ± std over seeds per setup, with ratios against a baseline rule
(Δaccuracy, time, energy and memory: the Spyra 2025 table format)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from beyondbp.bench.grid import setup_key
from beyondbp.runs import RunRecord

BASELINE = "bp"  # the rule every ratio is taken against unless told otherwise


BEHAVIOUR_SETTINGS = ("state_noise",)
"""Harness settings that change what a model computes rather than its budget: a run's label
and its paper-number variant name them beside the rule's options."""


def behaviour(record: RunRecord) -> dict[str, Any]:
    """The run's :data:`BEHAVIOUR_SETTINGS` that are set (non-zero)."""
    return {k: record.config[k] for k in BEHAVIOUR_SETTINGS if record.config.get(k)}


def options_diff(record: RunRecord) -> str:
    """The options of a run that differ from its rule's defaults, and its behaviour settings, as
    ``k=v, ...`` ('' if none)."""
    from beyondbp.rules import available_rules

    cls = available_rules().get(record.rule)
    if cls is None:
        return ""
    defaults = cls.Options().model_dump()
    diff = [f"{k}={v}" for k, v in record.options.items() if defaults.get(k) != v]
    return ", ".join(diff + [f"{k}={v}" for k, v in behaviour(record).items()])


def time_to_target(record: RunRecord, target: float) -> float | None:
    """Training seconds until the validation accuracy first reached ``target`` (None: never)."""
    for row in record.history:
        if (row.get("val_acc") or 0.0) >= target:
            return row["train_time_s"]
    return None


def summarize(
    records: Iterable[RunRecord], target_acc: float | None = None, baseline: str = BASELINE
) -> list[dict[str, Any]]:
    """Mean ± std over seeds for each (rule, dataset, net), with ratios against the ``baseline``
    rule on the same dataset and net: Δaccuracy, time, energy and memory ratios (the Spyra 2025
    table format)."""
    # Seeds of one setup form a group; the same rule, data and net under another budget or
    # other options is another group (its setup id tells them apart).
    groups: dict[tuple[str, str, str, str, str], list[RunRecord]] = {}
    for r in records:
        key = (r.rule, r.dataset, r.net, setup_key(r), setup_key(r, with_options=False))
        groups.setdefault(key, []).append(r)

    def stats(values: list[float | None]) -> tuple[float | None, float | None]:
        vals = [v for v in values if v is not None]
        if not vals:
            return None, None
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0

    rows = []
    for (rule, dataset, net, setup, budget), rs in groups.items():
        done = [r for r in rs if r.status == "finished"]
        row: dict[str, Any] = {
            "rule": rule,
            "dataset": dataset,
            "net": net,
            "setup": setup,
            "budget": budget,
            "variant": options_diff(rs[0]),
            "runs": len(done),
            "not_finished": len(rs) - len(done),
            "errors": sorted(
                {
                    f"{r.status}: {r.error or r.metrics.get('stop_reason')}"
                    for r in rs
                    if r.status != "finished"
                }
            ),
        }
        for key in metric_keys(done):
            row[key], row[key + "_std"] = stats([r.metrics.get(key) for r in done])
        if target_acc is not None:
            times = [time_to_target(r, target_acc) for r in done]
            row["target_acc"] = target_acc
            row["reached_target"] = sum(t is not None for t in times)
            row["time_to_target_s"], row["time_to_target_s_std"] = stats(times)
        labels = {r.metrics.get("energy_label") for r in done}
        row["energy_label"] = labels.pop() if len(labels) == 1 else "mixed"
        rows.append(row)
    # the baseline: its rule on the same data and net under the same harness budget; failing
    # that, on the same data and net under its own protocol (a paper comparison where each rule
    # trains to its own early stopping, e.g. FF with batch 100 against BP with batch 128)
    by_cell: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in rows:
        if r["rule"] == baseline and r["runs"]:
            by_cell.setdefault((r["dataset"], r["net"], r["budget"]), r)
            by_cell.setdefault((r["dataset"], r["net"]), r)
    for row in rows:
        base = by_cell.get((row["dataset"], row["net"], row["budget"]))
        row["baseline"] = f"{baseline}, same budget" if base else None
        if base is None and (base := by_cell.get((row["dataset"], row["net"]))) is not None:
            row["baseline"] = f"{baseline}, its own budget"
        for key, name in RATIOS:
            a, b = row.get(key), base.get(key) if base else None
            if a is None or b is None:
                row[name] = None
            else:
                row[name] = a - b if name == "delta_acc" else (a / b if b else None)
    return rows


METRICS = (
    "test_acc",
    "test_return",
    "train_time_s",
    "val_time_s",
    "peak_step_bytes",
    "peak_rss_bytes",
    "energy_wh",
    "flops_per_step",
    "gflops_per_s",
    "epochs",
    "step_transient_bytes",
)


def metric_keys(records: Iterable[RunRecord]) -> list[str]:
    """:data:`METRICS`, then every other numeric metric the runs hold (robust accuracies,
    inference memory, ...), in the order first seen; not a run's own ``*_std`` (the row's
    ``*_std`` is the spread over seeds)."""
    keys = dict.fromkeys(METRICS)
    for r in records:
        for k, v in r.metrics.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and not k.endswith("_std"):
                keys.setdefault(k)
    return list(keys)


RATIOS = (
    ("test_acc", "delta_acc"),
    ("train_time_s", "time_ratio"),
    ("energy_wh", "energy_ratio"),
    ("peak_step_bytes", "memory_ratio"),
)
