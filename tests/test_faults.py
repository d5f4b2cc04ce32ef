"""Fault injection: the real CLI and harness driven through kills, interrupts, a full disk and
corrupt files. Each case ends with the store consistent, every run in a truthful state, and a
rerun finishing the work (nothing lost, nothing run twice).

Elsewhere: a killed or Ctrl-C'd ``train`` resumes bit-identically (test_harness), a grid whose
parent is killed restarts without duplicates (test_bench), SIGTERM and Ctrl-C stop a grid with
exit code 130 (test_bench), a killed ``tune`` resumes and retries its stale trial (test_bench),
concurrent writers and a corrupt store file (test_store), a checkpoint carrying code is refused
(test_store).
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import beyondbp as bb
from beyondbp.bench.grid import GridSpec, record_key
from beyondbp.errors import BeyondBPError
from beyondbp.runs import RunStore

pytestmark = pytest.mark.slow

CELLS = 4  # bp on mlp:16 and mlp:16x2, seeds 0 and 1


def _bench(store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "beyondbp.cli", "bench", "--rules", "bp", "--nets",
            "mlp:16,mlp:16x2", "--seeds", "2", "--epochs", "6", "--batch-size", "16",
            "--store", str(store), "--device", "cpu", "--no-energy", *extra]  # fmt: skip


def _consistent_and_finished(store_path: Path) -> list:
    runs = RunStore(store_path).list()
    assert len(runs) == CELLS and len({record_key(r) for r in runs}) == CELLS  # each cell once
    assert all(r.status == "finished" and r.metrics["epochs"] == 6 for r in runs), [
        (r.id, r.status, r.error) for r in runs
    ]
    return runs


def _kill_everything(store_path: Path) -> None:
    """SIGKILL the grid and its workers at once (a machine losing power, an OOM killer):
    every process whose command line names the store."""
    needle = str(store_path).encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and needle in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass  # gone meanwhile


@pytest.mark.parametrize("at", [round(random.Random(s).uniform(1.0, 9.0), 2) for s in range(3)])
def test_a_grid_killed_with_its_workers_at_any_moment_finishes_on_rerun(tmp_path, at):
    store_path = tmp_path / "runs.sqlite"
    grid = subprocess.Popen(_bench(store_path, "--jobs", "2"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(at)
    _kill_everything(store_path)
    grid.wait(timeout=30)
    if store_path.exists():  # whatever was left: running, interrupted or finished, never failed
        assert all(r.status != "failed" for r in RunStore(store_path).list())
    again = subprocess.run(_bench(store_path), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    _consistent_and_finished(store_path)


@pytest.mark.parametrize(
    "at", [round(random.Random(10 + s).uniform(1.0, 9.0), 2) for s in range(2)]
)
def test_ctrl_c_at_any_moment_exits_130_and_the_rerun_finishes(tmp_path, at):
    store_path = tmp_path / "runs.sqlite"
    grid = subprocess.Popen(_bench(store_path, "--jobs", "2"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    time.sleep(at)
    grid.send_signal(signal.SIGINT)  # as a terminal does (the workers have sessions of their own)
    code = grid.wait(timeout=120)
    assert code in (0, 130)  # 0: the grid had finished before the signal
    runs = RunStore(store_path).list() if store_path.exists() else []
    assert all(r.status in ("finished", "interrupted") for r in runs), [
        (r.id, r.status, r.error) for r in runs
    ]
    if code == 130:
        assert any(r.status != "finished" for r in runs) or len(runs) < CELLS
    again = subprocess.run(_bench(store_path), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    _consistent_and_finished(store_path)


def test_a_full_disk_while_checkpointing_fails_the_run_clearly_and_it_resumes(
    tmp_path, monkeypatch
):
    import beyondbp.harness.loop as loop

    real, calls = loop.atomic_save, {"n": 0}

    def full_disk(obj, path):  # the third file (in epoch 2: best.pt, last.pt each) finds it full
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, path)

    common = dict(data="digits", net="mlp:16", epochs=5, patience=None, progress=False,
                  energy=False)  # fmt: skip
    store = RunStore(tmp_path / "runs.sqlite")
    monkeypatch.setattr(loop, "atomic_save", full_disk)
    with pytest.raises(BeyondBPError, match="cannot write the checkpoint .*No space left.* the "
                       "previous one is intact.*--resume") as err:  # fmt: skip
        bb.train("bp", store=store, **common)
    assert "\n" not in str(err.value)
    (run,) = store.list()
    assert run.status == "failed" and "No space left" in run.error and len(run.history) == 2
    monkeypatch.setattr(loop, "atomic_save", real)  # space freed
    resumed = bb.train("bp", store=store, resume=run.id, progress=False)
    whole = bb.train("bp", store=False, **common)
    assert resumed.record.status == "finished" and resumed.metrics["epochs"] == 5
    assert resumed.metrics["test_acc"] == whole.metrics["test_acc"]  # from epoch 1's checkpoint


def test_a_grid_cell_with_a_corrupt_checkpoint_starts_anew(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    grid = GridSpec(rules=["bp"], datasets=["digits"], nets=["mlp:8"], seeds=[0],
                    config={"epochs": 3, "energy": False})  # fmt: skip
    (run,) = bb.bench(grid, store=store).records
    expected = run.metrics["test_acc"]
    run.status = "interrupted"  # as a kill mid-write of ... leaves it, with a torn checkpoint
    store.save(run)
    ckpt = store.checkpoint_dir(run.id) / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    (again,) = bb.bench(grid, store=store).records
    assert again.status == "finished" and again.id == run.id and len(store.list()) == 1
    assert again.metrics["test_acc"] == expected  # trained again from the start, seeded
    assert (store.checkpoint_dir(run.id) / "last.pt.corrupt").is_file()  # kept for a look
