from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
from dataclasses import asdict

import pytest

from beyondbp.errors import BeyondBPError
from beyondbp.runs import RunRecord, RunStore

from .conftest import Planted


def _rec(i: int, **kw) -> RunRecord:
    return RunRecord(
        rule="bp",
        dataset="digits",
        net="mlp:8",
        seed=i,
        metrics={"test_acc": i / 10, "curve": [1, 2]},
        **kw,
    )


def test_unfinished_means_running_or_interrupted():
    want = {"running": True, "interrupted": True, "finished": False, "diverged": False,
            "failed": False}  # fmt: skip
    assert {s: _rec(0, status=s).unfinished for s in want} == want


def test_save_get_list_export(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    recs = [_rec(i) for i in range(3)]
    recs[2].status = "diverged"
    for r in recs:
        store.save(r)
    assert store.get(recs[1].id).metrics == recs[1].metrics
    assert [r.seed for r in store.list(status="running")] == [0, 1]
    with pytest.raises(BeyondBPError, match="no run"):
        store.get("nope")
    with pytest.raises(BeyondBPError, match="cannot filter"):
        store.list(colour="red")
    rows = list(csv.DictReader(io.StringIO(store.export("csv"))))
    assert [float(r["test_acc"]) for r in rows] == [0.0, 0.1, 0.2] and "curve" not in rows[0]
    full = json.loads(store.export("json"))
    assert full[0]["metrics"]["curve"] == [1, 2]
    with pytest.raises(BeyondBPError, match="csv, json"):
        store.export("xml")
    ckpt = store.checkpoint_dir(recs[0].id)
    ckpt.mkdir(parents=True)
    (ckpt / "last.pt").write_bytes(b"x")
    assert store.delete(recs[0].id[:-1]).id == recs[0].id
    assert [r.seed for r in store.list()] == [1, 2]
    assert not ckpt.exists()  # a deleted run's cell starts afresh, not from its old checkpoint


def test_list_filters_must_all_match(tmp_path):
    """``runs list --rule X --status Y``: every filter holds (AND), not any one of them (OR)."""
    store = RunStore(tmp_path / "runs.sqlite")
    recs = []
    for i, (rule, status, dataset) in enumerate(
        [("bp", "finished", "digits"), ("bp", "diverged", "digits"), ("dfa", "finished", "digits"),
         ("dfa", "diverged", "mnist"), ("bp", "finished", "mnist"), ("mezo", "running", "mnist")]
    ):  # fmt: skip
        r = _rec(i, status=status)
        r.rule, r.dataset, r.created = rule, dataset, 1000.0 + i
        store.save(r)
        recs.append(r)

    def want(**where) -> list[str]:
        return [r.id for r in recs if all(getattr(r, k) == v for k, v in where.items())]

    for where in (
        {"rule": "bp", "status": "finished"},
        {"rule": "dfa", "status": "diverged"},
        {"rule": "bp", "status": "finished", "dataset": "mnist"},
        {"rule": "mezo", "status": "finished"},  # each matches some run, together none
    ):
        assert [r.id for r in store.list(**where)] == want(**where), where
    assert [r.seed for r in store.list(rule="bp", status="finished")] == [0, 4]
    assert store.list(rule="mezo", status="finished") == []
    assert len(store.list(rule="bp")) == 3 and len(store.list()) == 6


def test_import_rebuilds_a_store_from_exported_or_results_json(tmp_path):
    from beyondbp.runs import records_from_json

    store = RunStore(tmp_path / "a.sqlite")
    recs = [_rec(i) for i in range(3)]
    recs[1].status = "finished"
    for r in recs:
        store.save(r)
    exported = tmp_path / "runs.json"
    exported.write_text(store.export("json"))
    results = tmp_path / "results.json"  # a benchmark results file: the runs under "runs"
    results.write_text(json.dumps({"command": "x", "runs": json.loads(exported.read_text())[:2]}))

    fresh = RunStore(tmp_path / "b.sqlite")
    assert [r.seed for r in fresh.add(records_from_json(results))] == [0, 1]
    added = fresh.add(records_from_json(exported))  # only the run not yet there
    assert [r.seed for r in added] == [2]
    assert [asdict(r) for r in fresh.list()] == [asdict(r) for r in store.list()]

    bad = tmp_path / "bad.json"
    bad.write_text('{"command": "x"}')
    with pytest.raises(BeyondBPError, match="holds no runs"):
        records_from_json(bad)
    bad.write_text('[{"dataset": "digits"}]')
    with pytest.raises(BeyondBPError, match="run 0 is not a run record"):
        records_from_json(bad)
    bad.write_text("[{")
    with pytest.raises(BeyondBPError, match="cannot read runs"):
        records_from_json(bad)


def test_save_replaces_the_same_run(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    r = _rec(0)
    store.save(r)
    r.status, r.metrics["test_acc"] = "finished", 0.9
    store.save(r)
    (only,) = store.list()
    assert only.status == "finished" and only.metrics["test_acc"] == 0.9


def _writer(path: str, worker: int, n: int) -> None:
    store = RunStore(path)
    for i in range(n):
        r = _rec(worker * 1000 + i)
        store.save(r)
        r.status = "finished"
        store.save(r)


@pytest.mark.slow
def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "runs.sqlite")
    RunStore(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = RunStore(path).list()
    assert len(runs) == 100 and len({r.id for r in runs}) == 100
    assert all(r.status == "finished" for r in runs)


def test_corrupt_store_file(tmp_path):
    path = tmp_path / "runs.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BeyondBPError, match="cannot be opened"):
        RunStore(path)


def test_a_checkpoint_carrying_a_pickled_callable_is_refused_and_runs_nothing(tmp_path):
    import torch

    from beyondbp.runs.checkpoint import atomic_save, load_checkpoint

    marker = tmp_path / "ran"
    torch.save({"modules": {}, "rule": {"x": Planted(marker)}}, tmp_path / "last.pt")
    with pytest.raises(BeyondBPError, match="holds more than data.*refused") as err:
        load_checkpoint(tmp_path / "last.pt")
    assert not marker.exists() and "\n" not in str(err.value)
    # data (tensors, numbers, strings, lists, dicts) loads
    atomic_save(
        {"w": torch.ones(2), "step": 3, "name": "bp", "xs": [1.5, None]}, tmp_path / "ok.pt"
    )
    ok = load_checkpoint(tmp_path / "ok.pt")
    assert ok["step"] == 3 and torch.equal(ok["w"], torch.ones(2)) and ok["xs"] == [1.5, None]
