from __future__ import annotations

import pytest
import torch
from torch import nn

from beyondbp.errors import BeyondBPError
from beyondbp.nets import BlockNet, as_blocknet, build_net


@pytest.mark.parametrize(
    ("spec", "widths"),
    [("mlp:1000x2", [1000, 1000]), ("mlp:64-32", [64, 32]), ("mlp:16x3:tanh", [16, 16, 16])],
)
def test_mlp_specs(spec, widths):
    net = build_net(spec, (1, 28, 28), 10)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [*widths, 10]
    assert linears[0].in_features == 784
    assert len(net.blocks) == len(widths)
    assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def test_identity_mlp_is_linear():
    """``mlp:WxD:identity`` is the digital part of a net without its nonlinearity."""
    torch.manual_seed(0)
    net = build_net("mlp:16x2:identity", (8,), 3)
    a, b, zero = torch.randn(4, 8), torch.randn(4, 8), torch.zeros(4, 8)
    torch.testing.assert_close(net(a + b), net(a) + net(b) - net(zero))
    relu = build_net("mlp:16x2", (8,), 3)
    assert not torch.allclose(relu(a + b), relu(a) + relu(b) - relu(zero))


def test_cnn3_matches_the_paper_block():
    net = build_net("cnn3", (1, 28, 28), 10)
    assert [type(m) for m in net.blocks[0]] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d]
    assert [b[0].out_channels for b in net.blocks] == [32, 128, 512]
    assert net.blocks[0][0].kernel_size == (3, 3) and net.blocks[0][0].padding == (1, 1)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert [f.shape[1:] for f in net.features(torch.randn(2, 1, 28, 28))] == [
        (32, 14, 14),
        (128, 7, 7),
        (512, 3, 3),
    ]
    assert build_net("cnn3:8-16-32", (3, 32, 32), 10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bad_specs_name_the_valid_forms():
    with pytest.raises(BeyondBPError, match="valid forms: mlp"):
        build_net("resnet18", (1, 28, 28), 10)
    with pytest.raises(BeyondBPError, match="image input"):
        build_net("cnn3", (64,), 10)
    with pytest.raises(BeyondBPError, match="too small"):
        build_net("cnn3", (1, 4, 4), 10)


def test_user_sequential_becomes_blocks_and_head():
    seq = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    net = as_blocknet(seq)
    assert isinstance(net, BlockNet) and len(net.blocks) == 3 and net.head is seq[3]
    x = torch.randn(2, 4)
    assert torch.equal(net(x), seq(x))
    with pytest.raises(BeyondBPError, match="BlockNet"):
        as_blocknet(nn.Linear(2, 2))
