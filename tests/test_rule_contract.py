"""The rule contract, checked for every registered rule on a task it supports.

A run stopped mid-epoch (as Ctrl-C stops it) and resumed from its checkpoint must end with
bit-identical weights, learning state and validation history to a run that was never stopped;
``predict`` must give one score per class. This covers the rules that draw random numbers while
they train (FF's negatives, populations, perturbations), whose resume needs every RNG state.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

import beyondbp as bb
from beyondbp.harness import Callback
from beyondbp.rules import available_rules
from beyondbp.runs import RunStore, load_checkpoint

from .conftest import FAST

# (net, options, extra harness settings) per rule: small enough to run in a second or two
SETUPS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "bp": ("mlp:16x2", {}, {}),
    "bptt": ("snn:16:delay-5", {}, {}),
    "cafo": ("mlp:16x2", {}, {}),
    "convex-admm": ("mlp:20", {}, {}),
    "convex-gated": ("mlp:20", {}, {}),
    "convex-robust": ("mlp:4", {"eps": 0.05}, {}),
    "convex-scp": ("mlp:20", {}, {}),
    "de": ("mlp:8", {"population": 10}, {}),
    "de-init": ("mlp:8", {"population": 10, "generations": 3}, {}),
    "deep-ga": ("mlp:8", {"population": 10, "truncation": 3, "elite_evals": 2}, {}),
    "dfa": ("mlp:16x2", {}, {}),
    "drtp": ("mlp:16x2", {}, {}),
    "ep": ("hopfield:16", {"t1": 10, "t2": 5}, {}),
    "es": ("mlp:8", {"popsize": 10}, {}),
    "ff": ("mlp:16x2", {}, {}),
    "full-ft": ("mlp:16x2", {}, {}),
    "ghep": ("vf:16", {"t1": 10, "t2": 5, "homeostasis": 1.0}, {}),  # draws ε while training
    "hep": ("hopfield:16", {"t1": 10, "t2": 5, "n": 4}, {}),
    "lora": ("lm:tiny", {"modules": "all-linear"}, {"epochs": 1, "max_steps": 4, "batch_size": 16}),
    "pat": ("phys:scatter:16x2", {"twin_samples": 200, "twin_epochs": 2, "twin_hidden": [16]}, {}),
    "bp-twin": (
        "phys:scatter:16x2",
        {"twin_samples": 200, "twin_epochs": 2, "twin_hidden": [16], "mismatch": 0.2},
        {},
    ),
    "phyll": ("phys:scatter:16x2", {"inner_steps": 2}, {}),
    "pretrained": ("mlp:16x2", {}, {}),
    "s2ft": (
        "lm:tiny",
        {"selection": "gradient", "o_proj": 0.3},
        {"epochs": 1, "max_steps": 4, "batch_size": 16},
    ),
    "ff-la": ("gcn:16x2", {"epochs_per_layer": 1}, {}),
    "ff-vn": ("gcn:16x2", {"epochs_per_layer": 1}, {}),
    "mezo": ("mlp:16", {"lr": 1e-3}, {}),
    "mono-forward": ("mlp:16x2", {}, {}),
    "noprop": ("noprop:3", {}, {}),
    "sf": ("gcn:16x2", {"epochs_per_layer": 1}, {}),
    "sf-topdown": ("gcn:16x2", {}, {}),
    "sf-link": ("gcn:16x2", {"epochs_per_layer": 1}, {}),
    "ff-link": ("gcn:16x2", {"epochs_per_layer": 1}, {}),
    "sf-link-topdown": ("gcn:16x2", {}, {}),
    "stdp": ("stdp:16:meta:learn:lzc", {}, {}),
    "tempotron": ("tempotron", {"learn_threshold": True}, {}),
    "tpsgd": ("mlp:16x2", {}, {}),
    "zo-adam": ("mlp:16", {}, {}),
}
# variants whose learning state differs from the defaults'
VARIANTS: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "cafo-dfa": ("cafo", "mlp:16x2", {"block_training": "dfa", "dfa_epochs": 1}, {}),
    "cafo-patience": ("cafo", "mlp:16x2", {"predictor_patience": 1}, {}),
    "hep-noise": ("hep", "hopfield:16", {"t1": 10, "t2": 5, "n": 3}, {"state_noise": 0.04}),
    "ghep-exact": ("ghep", "vf:16:angle-90", {"t1": 10, "t2": 5, "n": 0}, {}),
    "bptt-meta-lzc": ("bptt", "snn:16:meta:learn:lzc", {}, {}),
    "tempotron-meta": ("tempotron", "tempotron:meta", {}, {}),
    "phyll-noise-drift": ("phyll", "phys:oscillators:32x2:noise-0.1:drift-1", {}, {}),
    "mono-forward-greedy": (
        "mono-forward", "mlp:16x2", {"layer_schedule": "greedy", "epochs_per_layer": 1}, {},
    ),
}  # fmt: skip
DATA = {"convex-robust": "digits:3,8", "bptt": "delay-synth", "tempotron": "delay-synth", "stdp": "poisson-digits", "ff-la": "cora_ml", "ff-vn": "cora_ml", "sf": "cora_ml",
        "sf-topdown": "cora_ml", "sf-link": "cora_ml:links", "ff-link": "cora_ml:links",
        "sf-link-topdown": "cora_ml:links", "lora": "arith", "s2ft": "arith"}  # fmt: skip
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


class _InterruptAt(Callback):
    """Stops the run after global step ``step``, as Ctrl-C would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, x, y, logs):  # type: ignore[no-untyped-def]
        if trainer.state.steps == self.step:
            trainer.interrupt()


def _cases() -> list[Any]:
    cases = []
    for name in available_rules():
        if name not in SETUPS:
            cases.append(pytest.param(name, None, id=name))  # fails: every rule needs a setup
            continue
        net, options, config = SETUPS[name]
        marks = []
        if name in ("bptt", "stdp") and _no_spiking():
            marks.append(pytest.mark.skip(reason="needs beyondbp[spiking]"))
        if name == "convex-robust" and importlib.util.find_spec("cvxpy") is None:
            marks.append(pytest.mark.skip(reason="needs beyondbp[convex]"))
        needs_cora = DATA.get(name, "").startswith("cora_ml")
        if needs_cora and not (SHARED / "citation" / "cora_ml.npz").is_file():
            marks.append(pytest.mark.skip(reason="needs ../shared/data/citation"))
        cases.append(pytest.param(name, (name, net, options, config), id=name, marks=marks))
    for case_id, setup in VARIANTS.items():
        spiking = ":lzc" in setup[1] or setup[0] == "bptt"
        marks = (
            [pytest.mark.skip(reason="needs beyondbp[spiking]")]
            if spiking and _no_spiking()
            else []
        )
        cases.append(pytest.param(setup[0], setup, id=case_id, marks=marks))
    return cases


def _no_spiking() -> bool:
    return any(importlib.util.find_spec(m) is None for m in ("snntorch", "numba"))


def _train(setup: tuple[str, str, dict, dict], store, **kwargs: Any) -> bb.TrainResult:  # type: ignore[no-untyped-def]
    rule, net, options, config = setup
    settings = dict(epochs=3, batch_size=256, patience=None, seed=1, **FAST) | config
    return bb.train(rule, DATA.get(rule, "digits"), net, options=options, store=store,
                    **settings, **kwargs)  # fmt: skip


def _final(store_path, run_id: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return load_checkpoint(RunStore(store_path).checkpoint_dir(run_id) / "last.pt")


def _assert_equal(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"  # NaN equals NaN


@pytest.mark.slow
@pytest.mark.parametrize(("rule", "setup"), _cases())
def test_resume_mid_epoch_is_bit_identical_and_predict_has_the_shape(
    rule, setup, tmp_path, monkeypatch
):
    assert setup is not None, f"add rule {rule!r} to SETUPS in {__file__}"
    monkeypatch.setenv("BEYONDBP_DATA", str(SHARED))  # the graph rules' Cora-ML
    ref_store, cut_store = tmp_path / "ref" / "runs.sqlite", tmp_path / "cut" / "runs.sqlite"
    ref = _train(setup, ref_store)
    assert ref.record.status == "finished", ref.record.error
    steps = ref.metrics["steps"]
    # mid-run, mid-epoch where there is more than one step (a one-step solver: after its step,
    # before the epoch's end)
    cut_at = max(1, steps // 2 + (1 if steps % 2 == 0 else 0))
    cut = _train(setup, cut_store, callbacks=[_InterruptAt(cut_at)])
    assert cut.record.status == "interrupted"
    resumed = bb.train(rule, store=cut_store, resume=cut.record.id, **FAST)
    assert resumed.record.status == "finished", resumed.record.error

    a, b = _final(ref_store, ref.record.id), _final(cut_store, cut.record.id)
    _assert_equal(a["modules"], b["modules"], "modules")
    _assert_equal(a["rule"], b["rule"], "rule state")
    hist = RunStore(cut_store).get(cut.record.id).history
    _assert_equal([h.get("val_loss") for h in ref.record.history],
                  [h.get("val_loss") for h in hist], "val_loss history")  # fmt: skip
    assert ref.metrics["test_acc"] == resumed.metrics["test_acc"]

    task = bb.load_dataset(DATA.get(rule, "digits"))
    x = task.test.x[:7]
    resumed.rule.set_phase("test")
    with torch.no_grad():
        scores = resumed.rule.predict(x.to(next(resumed.model.parameters()).device))
    assert scores.shape[:2] == (7, task.meta.classes)  # a language model: (7, vocabulary, K)
