from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from pydantic import Field

import beyondbp as bb
from beyondbp.data.core import Split
from beyondbp.rules import Rule, RuleOptions
from beyondbp.runs import RunStore, load_checkpoint

from .conftest import FAST

SCRIPT = Path(__file__).with_name("_resume_script.py")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


def _final_weights(store: Path, run_id: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(RunStore(store).checkpoint_dir(run_id) / "last.pt")["modules"]["net"]


@pytest.mark.slow
@pytest.mark.parametrize(("flag", "at"), [("--kill-at", "55"), ("--int-at", "70")])
def test_killed_or_interrupted_run_resumes_to_the_same_result(tmp_path, flag, at):
    """digits: 1294 training examples, batch 32 -> 41 steps per epoch; the signal lands mid
    epoch 2. SIGKILL resumes from the epoch-1 checkpoint, SIGINT saves mid-epoch itself."""
    ref_store, store = tmp_path / "ref" / "runs.sqlite", tmp_path / "cut" / "runs.sqlite"
    ref = _run(str(ref_store), str(tmp_path / "ref.id"))
    assert "STATUS finished" in ref.stdout, ref.stderr

    cut = _run(str(store), str(tmp_path / "cut.id"), flag, at)
    run_id = (tmp_path / "cut.id").read_text()
    record = RunStore(store).get(run_id)
    if flag == "--kill-at":
        assert cut.returncode == -signal.SIGKILL
        assert record.status == "running"  # killed: the record could not be updated
    else:
        assert "STATUS interrupted" in cut.stdout, cut.stderr
        assert record.status == "interrupted" and len(record.history) == 1
        ckpt = load_checkpoint(RunStore(store).checkpoint_dir(run_id) / "last.pt")
        assert ckpt["harness"]["batch"] == 70 - 41  # saved mid-epoch, at the step it stopped

    resumed = _run(str(store), str(tmp_path / "x.id"), "--resume", run_id)
    assert "STATUS finished" in resumed.stdout, resumed.stderr
    ref_id = (tmp_path / "ref.id").read_text()
    a, b = RunStore(ref_store).get(ref_id), RunStore(store).get(run_id)
    assert b.status == "finished" and len(b.history) == 4
    assert a.metrics["test_acc"] == b.metrics["test_acc"]
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    wa, wb = _final_weights(ref_store, ref_id), _final_weights(store, run_id)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_early_stopping_and_restore_best(tmp_path):
    res = bb.train(
        "bp",
        "digits",
        "mlp:64",
        options={"lr": 3e-2},
        epochs=60,
        patience=3,
        store=tmp_path / "runs.sqlite",
        **FAST,
    )
    m = res.metrics
    assert "early stop" in m["stop_reason"] and m["epochs"] < 60
    assert m["epochs"] == m["best_epoch"] + 3 and m["tested_epoch"] == m["best_epoch"]
    best = min(h["val_loss"] for h in res.record.history)
    assert m["val_loss"] == best
    # the returned model is the best epoch's: its validation loss is the best one
    ds = bb.load_dataset("digits").to(next(res.model.parameters()).device)
    with torch.no_grad():
        val = torch.nn.functional.cross_entropy(res.model(ds.val.x), ds.val.y).item()
    assert val == pytest.approx(best, rel=1e-5)


class _ScriptedOptions(RuleOptions):
    val_losses: list[float] = Field(default_factory=list)


class ScriptedVal(Rule):
    """A test rule whose validation loss is scripted: its one step per epoch sets the linear net
    ("mlp:") to :func:`_scripted_weights` of that epoch. Score 0 is then the scripted loss for
    every example, and ``eval_loss`` is its mean; the other scores are seeded random, so the
    accuracy differs from epoch to epoch."""

    name = "scripted-val"
    Options = _ScriptedOptions
    options: _ScriptedOptions
    unit = "dataset"
    stateful = ("t",)

    def setup(self, net, meta, ctx):  # type: ignore[no-untyped-def]
        self.net, self.t = net, 0

    def step(self, x, y):  # type: ignore[no-untyped-def]
        self.t += 1
        w, b = _scripted_weights(self.t, self.options.val_losses[self.t - 1])
        with torch.no_grad():
            self.net.head[1].weight.copy_(w)
            self.net.head[1].bias.copy_(b)
        return {"loss": 0.0}

    def eval_loss(self, scores, y):  # type: ignore[no-untyped-def]
        return scores[:, 0].sum()


def _scripted_weights(epoch: int, val_loss: float) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.randn(10, 64, generator=torch.Generator().manual_seed(epoch))
    w[0] = 0.0
    b = torch.zeros(10)
    b[0] = val_loss
    return w, b


def _score_by_hand(split: Split, epoch: int, val_loss: float) -> tuple[float, float]:
    """(loss, accuracy) of epoch ``epoch``'s scripted weights on a split, by hand."""
    w, b = _scripted_weights(epoch, val_loss)
    scores = split.x.flatten(1) @ w.T + b
    return float(scores[:, 0].mean()), int((scores.argmax(1) == split.y).sum()) / len(split.y)


@pytest.fixture
def scripted(monkeypatch):  # type: ignore[no-untyped-def]
    """Trains ``scripted-val`` on digits with the given validation losses (a rule registered for
    this test only)."""
    from beyondbp.rules import registry

    monkeypatch.setitem(registry._REGISTRY, ScriptedVal.name, ScriptedVal)

    def train(val_losses: list[float], **kw):  # type: ignore[no-untyped-def]
        return bb.train("scripted-val", "digits", "mlp:", options={"val_losses": val_losses},
                        epochs=len(val_losses), store=False, probe=False, **FAST, **kw)  # fmt: skip

    return train


def test_the_test_split_is_scored_with_the_best_validation_epochs_weights(scripted):
    losses = [3.0, 1.0, 2.0, 2.5]  # the best validation is epoch 2, not the last
    res = scripted(losses, patience=None)
    m, ds = res.metrics, bb.load_dataset("digits")
    assert m["epochs"] == 4 and m["best_epoch"] == 2 and m["tested_epoch"] == 2
    best, last = _score_by_hand(ds.test, 2, 1.0), _score_by_hand(ds.test, 4, 2.5)
    assert best[1] != last[1]  # the accuracy tells the two epochs apart
    assert (m["test_loss"], m["test_acc"]) == pytest.approx(best, rel=1e-6)
    w, b = _scripted_weights(2, 1.0)
    assert torch.equal(res.model.head[1].weight, w) and torch.equal(res.model.head[1].bias, b)


@pytest.mark.parametrize(("patience", "best", "epochs"), [(1, 2, 3), (2, 4, 6), (3, 4, 7)])
def test_patience_stops_exactly_that_many_validations_after_the_last_improvement(
    scripted, patience, best, epochs
):
    # improvements at epochs 1, 2 and 4; epoch 3 is one validation without improvement (which
    # patience 1 stops on), and epoch 4's improvement starts the count again
    res = scripted([4.0, 3.0, 3.5, 2.0] + [2.5] * 16, patience=patience)
    m = res.metrics
    assert m["stop_reason"] == f"early stop: val_loss did not improve for {patience} epochs"
    assert (m["best_epoch"], m["epochs"], len(res.record.history)) == (best, epochs, epochs)
    assert res.record.status == "finished" and m["tested_epoch"] == best


def test_patience_stops_a_run_that_no_longer_improves(scripted):
    losses = [1.0] + [2.0] * 29  # never better than epoch 1
    res = scripted(losses, patience=5)
    assert "early stop" in res.metrics["stop_reason"] and res.metrics["epochs"] == 6
    res = scripted(losses, patience=None)  # off: all the epochs
    assert res.metrics["stop_reason"] == "reached 30 epochs" and res.metrics["epochs"] == 30


def test_the_reported_validation_metrics_are_the_best_epochs(scripted):
    res = scripted([3.0, 1.0, 2.0, 2.5], patience=None)
    m, val = res.metrics, bb.load_dataset("digits").val
    best, last = _score_by_hand(val, 2, 1.0), _score_by_hand(val, 4, 2.5)
    assert best[1] != last[1]
    assert m["best_epoch"] == 2
    assert (m["val_loss"], m["val_acc"]) == pytest.approx(best, rel=1e-6)
    assert [h["val_loss"] for h in res.record.history] == [3.0, 1.0, 2.0, 2.5]


def test_validation_every_k_epochs_and_patience_counted_in_validations():
    res = bb.train(
        "bp", "digits", "mlp:32", options={"lr": 3e-2}, epochs=7, val_every=3, patience=None,
        store=False, **FAST,
    )  # fmt: skip
    checked = [h["epoch"] for h in res.record.history if "val_loss" in h]
    assert checked == [3, 6, 7]  # every third epoch, and the last
    assert res.metrics["best_epoch"] in checked
    # patience of 2 validations, one every 2 epochs: a stop 4 epochs after the best
    res = bb.train(
        "bp", "digits", "mlp:32", options={"lr": 3e-2}, epochs=200, val_every=2, patience=2,
        store=False, **FAST,
    )  # fmt: skip
    m = res.metrics
    assert "early stop" in m["stop_reason"] and m["epochs"] == m["best_epoch"] + 4


def test_divergence_stops_with_status_diverged(tmp_path):
    store = tmp_path / "runs.sqlite"
    res = bb.train(
        "bp",
        "digits",
        "mlp:64",
        options={"optimizer": "sgd", "lr": 1e4},
        epochs=5,
        store=store,
        **FAST,
    )
    assert res.record.status == "diverged"
    assert "loss" in res.metrics["stop_reason"]
    assert RunStore(store).get(res.record.id).status == "diverged"


def test_step_and_time_budgets():
    res = bb.train(
        "bp", "digits", "mlp:32", epochs=50, max_steps=25, batch_size=64, store=False, **FAST
    )
    assert res.metrics["steps"] == 25 and "25 steps" in res.metrics["stop_reason"]
    assert res.metrics["epochs"] == 2  # the partial epoch is evaluated, then training stops
    # patience off: on a fast machine early stopping would otherwise end the run first
    res = bb.train(
        "bp", "digits", "mlp:32", epochs=10_000, max_seconds=1.0, patience=None, store=False, **FAST
    )
    assert res.record.status == "finished" and "seconds" in res.metrics["stop_reason"]
    assert res.metrics["train_time_s"] < 2.0


def test_failure_is_recorded(tmp_path, monkeypatch):
    from beyondbp.rules.bp import Backprop

    def boom(self, x, y):
        raise RuntimeError("exploded")

    monkeypatch.setattr(Backprop, "step", boom)
    store = tmp_path / "runs.sqlite"
    with pytest.raises(RuntimeError, match="exploded"):
        bb.train("bp", "digits", "mlp:16", epochs=1, store=store, **FAST)
    (rec,) = RunStore(store).list()
    assert rec.status == "failed" and "exploded" in rec.error


def test_same_seed_same_result_different_seed_different_weights():
    runs = [
        bb.train("bp", "digits", "mlp:32", epochs=2, seed=s, store=False, **FAST) for s in (1, 1, 2)
    ]
    w = [r.model.state_dict() for r in runs]
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    assert not torch.equal(w[0]["blocks.0.1.weight"], w[2]["blocks.0.1.weight"])


def test_unknown_training_setting():
    with pytest.raises(bb.UnknownNameError, match="valid training settings: .*batch_size"):
        bb.train("bp", "digits", "mlp:32", epoch=2, store=False)


def test_rules_whose_step_uses_the_whole_training_set(tmp_path):
    """unit = "dataset" (a population generation, a solver iteration): the harness hands the
    whole training set to each step and counts steps_per_epoch steps as an epoch."""
    import torch.nn.functional as F

    from beyondbp.rules import register
    from beyondbp.rules.base import Rule

    @register("full-batch-gd", "full-batch gradient descent (tests only)")
    class FullBatch(Rule):
        unit = "dataset"
        seen: ClassVar[list[int]] = []

        def setup(self, net, meta, ctx):
            self.net = net
            self.opt = torch.optim.SGD(net.parameters(), lr=0.5)

        def step(self, x, y):
            FullBatch.seen.append(len(y))
            self.opt.zero_grad()
            loss = F.cross_entropy(self.net(x), y)
            loss.backward()
            self.opt.step()
            return {"loss": loss.detach()}

    res = bb.train(
        "full-batch-gd",
        "digits",
        "mlp:",
        epochs=10,
        steps_per_epoch=5,
        store=tmp_path / "r.sqlite",
        **FAST,
    )
    n_train = res.record.metrics["examples"] // 50
    assert FullBatch.seen == [n_train] * 50 and n_train == 1293
    assert res.metrics["steps"] == 50 and len(res.record.history) == 10
    assert res.metrics["test_acc"] > 0.85  # a linear classifier on digits


def test_callbacks_see_every_epoch_and_can_stop_the_run():
    rows = []

    def stop_at_three(row):
        rows.append(row)
        return "stopped by callback" if row["epoch"] == 3 else None

    res = bb.train(
        "bp",
        "digits",
        "mlp:32",
        epochs=10,
        patience=None,
        callbacks=[stop_at_three],
        run_id="my-run",
        store=False,
        **FAST,
    )
    assert [r["epoch"] for r in rows] == [1, 2, 3] and "val_acc" in rows[0]
    assert res.metrics["stop_reason"] == "stopped by callback" and res.record.id == "my-run"


def test_a_run_without_checkpoints_cannot_be_resumed(tmp_path):
    from beyondbp.errors import BeyondBPError
    from beyondbp.harness import Callback

    class Stop(Callback):
        def on_step_end(self, trainer, x, y, logs):  # type: ignore[no-untyped-def]
            trainer.interrupt()

    store = tmp_path / "runs.sqlite"
    cut = bb.train("bp", "digits", "mlp:16", epochs=2, checkpoint=False, store=store,
                   callbacks=[Stop()], **FAST)  # fmt: skip
    assert cut.record.status == "interrupted"
    with pytest.raises(BeyondBPError, match="checkpoint=False"):
        bb.train("bp", store=store, resume=cut.record.id, **FAST)


def test_loaded_rule_state_never_writes_into_a_view_of_other_data():
    from beyondbp.rules.base import _load

    data = torch.zeros(10, 3)
    view = data[:4]
    out = _load(view, torch.ones(4, 3))
    assert torch.equal(out, torch.ones(4, 3)) and torch.equal(data, torch.zeros(10, 3))
    own = torch.zeros(4, 3)
    assert _load(own, torch.ones(4, 3)) is own and torch.equal(own, torch.ones(4, 3))
