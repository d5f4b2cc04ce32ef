"""S²FT: co-permutation, partial backprop, adapters (fuse, save/load, switch, mixed batches).

A tiny LLaMA with grouped-query attention (6 query heads over 2 key-value heads), built from a
config: no files needed.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from beyondbp.errors import BeyondBPError
from beyondbp.s2ft import S2FTConfig, S2Linear, get_model, select_units
from beyondbp.s2ft.model import head_order

ALL = {"down_proj": 0.2, "up_proj": 0.1, "o_proj": 0.34, "v_proj": 0.5}


@pytest.fixture(scope="module")
def base() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=96, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, head_dim=16, use_cache=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(1))


def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def randomise(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("selection", ["random", "weight", "activation", "gradient", "combined"])
def test_permutation_keeps_the_function(base, ids, selection):
    model = copy.deepcopy(base)

    def calibrate():
        return model(input_ids=ids, labels=ids).loss

    s2 = get_model(model, S2FTConfig(targets=ALL, selection=selection), calibrate)
    # the weights did move (the selection is not already at the front everywhere) ...
    moved = any(
        not torch.equal(a, b) for a, b in zip(base.parameters(), model.parameters(), strict=False)
    )
    assert moved
    # ... and the function did not
    torch.testing.assert_close(logits(s2, ids), logits(base, ids), atol=2e-5, rtol=0)


@pytest.mark.parametrize("heads", [[4], [1, 5], [0, 3, 5], [2, 3]])
def test_heads_from_several_groups_permute_without_changing_the_function(base, ids, heads):
    """Query heads 0-2 read key-value head 0 and 3-5 read head 1: moving a head out of its
    group (what a GQA-unaware permutation does) would change the output."""
    from beyondbp.s2ft.model import _sizes, permute_block

    model = copy.deepcopy(base)
    for block in model.model.layers:
        permute_block(block, {"o_proj": heads, "v_proj": [1]}, _sizes(model))
    assert not torch.equal(model.model.layers[0].self_attn.o_proj.weight,
                           base.model.layers[0].self_attn.o_proj.weight)  # fmt: skip
    torch.testing.assert_close(logits(model, ids), logits(base, ids), atol=2e-5, rtol=0)


def test_head_order_keeps_query_heads_with_their_group():
    for o_heads, v_groups in [([0, 4, 8], [2]), ([1, 2, 7], []), ([5], [0, 2])]:
        qorder, gorder = head_order(o_heads, v_groups, heads=9, groups=3)
        assert sorted(qorder.tolist()) == list(range(9))
        for j, h in enumerate(qorder.tolist()):  # new head j reads new key-value head j // 3
            assert h // 3 == int(gorder[j // 3])
        assert gorder[: len(v_groups)].tolist() == sorted(v_groups)  # v rows contiguous


def test_ffn_slices_are_contiguous(base):
    s2 = get_model(copy.deepcopy(base), S2FTConfig(targets={"down_proj": 0.1, "up_proj": 0.1}))
    for name, layer in s2.s2_layers().items():
        assert layer.span is not None and layer.span[0] >= 0, name


@pytest.mark.parametrize("side", ["in", "out"])
def test_slice_gradient_equals_the_dense_weights_gradient(side):
    torch.manual_seed(0)
    dense = nn.Linear(12, 8)
    idx = torch.tensor([2, 3, 4]) if side == "in" else torch.tensor([1, 5])
    layer = S2Linear(copy.deepcopy(dense), side, idx)
    x, g = torch.randn(4, 5, 12, requires_grad=True), torch.randn(4, 5, 8)
    (layer(x) * g).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    (dense(x2) * g).sum().backward()
    expected = dense.weight.grad[:, idx] if side == "in" else dense.weight.grad[idx]
    torch.testing.assert_close(layer.delta.grad, expected)
    torch.testing.assert_close(x.grad, x2.grad)  # the input's gradient is the dense one
    assert layer.base.weight.grad is None  # the frozen weight gets no gradient at all


def test_partial_backprop_saves_only_the_selected_activations():
    """Autograd keeps the selected columns of the input (a copy), never the whole input."""
    torch.manual_seed(0)
    layer = S2Linear(nn.Linear(64, 16, bias=False), "in", torch.arange(8, 12))
    params = {p.data_ptr() for p in layer.parameters()}
    x = torch.randn(4, 10, 64, requires_grad=True)
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in params:
            saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    assert all(t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr() for t in saved)
    saved_bytes = sum(t.numel() * t.element_size() for t in saved)
    assert saved_bytes == 4 * 10 * 4 * 4  # the 4 selected channels of 40 tokens, float32
    y.sum().backward()  # and it still trains
    assert layer.delta.grad is not None


def test_fuse_and_unfuse(base, ids):
    s2 = get_model(copy.deepcopy(base), S2FTConfig(targets=ALL))
    before = [m.weight.clone() for m in s2.s2_layers().values()]
    randomise(s2, 0)
    unfused = logits(s2, ids)
    assert not torch.allclose(unfused, logits(base, ids), atol=1e-4)
    s2.fuse()
    torch.testing.assert_close(logits(s2, ids), unfused, atol=2e-5, rtol=0)
    s2.unfuse()
    for w, m in zip(before, s2.s2_layers().values(), strict=True):
        torch.testing.assert_close(m.weight, w, atol=1e-6, rtol=0)
    merged = s2.merge_and_unload()
    assert not any(isinstance(m, S2Linear) for m in merged.modules())
    torch.testing.assert_close(logits(merged, ids), unfused, atol=2e-5, rtol=0)


@pytest.fixture(scope="module")
def adapters(base, ids, tmp_path_factory):
    """Two adapters trained (here: set at random) on differently permuted copies of the base,
    saved, with the outputs each gives."""
    out, dirs = {}, {}
    for name, seed in (("a", 1), ("b", 2)):
        s2 = get_model(copy.deepcopy(base), S2FTConfig(targets=ALL, seed=seed))
        randomise(s2, seed)
        dirs[name] = tmp_path_factory.mktemp(name)
        s2.save_adapter(dirs[name])
        out[name] = logits(s2, ids)
    return dirs, out


def test_switch_between_saved_adapters_in_place(base, ids, adapters):
    dirs, expected = adapters
    server = get_model(copy.deepcopy(base), S2FTConfig(targets=ALL, seed=3))  # its own order
    for name, d in dirs.items():
        server.load_adapter(d, name)
    for name in ("a", "b", "a"):
        server.switch(name)
        torch.testing.assert_close(logits(server, ids), expected[name], atol=2e-5, rtol=0)
    server.switch(None)
    torch.testing.assert_close(logits(server, ids), logits(base, ids), atol=2e-5, rtol=0)
    with pytest.raises(BeyondBPError, match="no adapter 'c'"):
        server.switch("c")


def test_a_mixed_batch_serves_each_example_with_its_adapter(base, ids, adapters):
    dirs, expected = adapters
    server = get_model(copy.deepcopy(base), S2FTConfig(targets=ALL, seed=3))
    for name, d in dirs.items():
        server.load_adapter(d, name)
    with server.serving(["b", None, "a"]):
        mixed = logits(server, ids)
    torch.testing.assert_close(mixed[0], expected["b"][0], atol=2e-5, rtol=0)
    torch.testing.assert_close(mixed[1], logits(base, ids)[1], atol=2e-5, rtol=0)
    torch.testing.assert_close(mixed[2], expected["a"][2], atol=2e-5, rtol=0)
    torch.testing.assert_close(logits(server, ids), logits(base, ids), atol=2e-5, rtol=0)


def test_global_allocation_takes_the_fraction_of_all_units(base):
    picks = select_units(base, S2FTConfig(targets={"down_proj": 0.05}))["down_proj"]
    assert sum(map(len, picks)) == int(0.05 * 2 * 128)
    per_layer = select_units(base, S2FTConfig(targets={"down_proj": 0.05}, allocation="per-layer"))[
        "down_proj"
    ]
    assert [len(p) for p in per_layer] == [int(0.05 * 128)] * 2


def test_weight_selection_keeps_the_largest_or_smallest_columns(base):
    w = base.model.layers[0].mlp.down_proj.weight.detach()
    norms = w.norm(dim=0)
    for order, pick in (("largest", norms.argsort()[-6:]), ("smallest", norms.argsort()[:6])):
        config = S2FTConfig(targets={"down_proj": 0.05}, selection="weight", order=order,
                            allocation="per-layer")  # fmt: skip
        assert select_units(base, config)["down_proj"][0] == sorted(pick.tolist())


def test_bad_configs_are_clear_errors(base):
    with pytest.raises(ValueError, match="unknown S²FT target 'k_proj'"):
        S2FTConfig(targets={"k_proj": 0.1})
    with pytest.raises(BeyondBPError, match="selects none"):
        get_model(copy.deepcopy(base), S2FTConfig(targets={"v_proj": 0.01}))
    with pytest.raises(BeyondBPError, match="calibrate="):
        get_model(copy.deepcopy(base), S2FTConfig(selection="gradient"))
