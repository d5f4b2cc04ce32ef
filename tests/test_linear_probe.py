"""The linear-probe start (head_init='probe'): the fitted head is the regularised logistic
regression's optimum, and a run started from it begins where the probe ends."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

import beyondbp as bb
from beyondbp.errors import BeyondBPError
from beyondbp.linear_probe import fit_head, head_features
from beyondbp.nets import build_net


def blobs(n: int = 300, d: int = 8, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(classes, d, generator=g)[y] + torch.randn(n, d, generator=g)
    return x, y


def test_probe_is_the_logistic_regression_optimum():
    x, y = blobs()
    torch.manual_seed(0)
    net = build_net("mlp:16", (8,), 3).double()
    body = [p.detach().clone() for n, p in net.named_parameters() if not n.startswith("head")]
    l2 = 1e-2
    out = fit_head(net, x.double(), y, batch_size=64, l2=l2)
    head = net.head
    # the body is untouched
    after = [p for n, p in net.named_parameters() if not n.startswith("head")]
    assert all(torch.equal(a, b) for a, b in zip(body, after, strict=True))
    # first-order optimality of mean CE + l2/2 ‖W‖²
    feats = head_features(net, x.double(), 64)
    w = head.weight.detach().clone().requires_grad_(True)
    b = head.bias.detach().clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(feats @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
    gw, gb = torch.autograd.grad(loss, (w, b))
    assert float(torch.cat([gw.flatten(), gb]).norm()) < 1e-5
    # the same optimum as scikit-learn's (C = 1 / (l2 n) for its summed loss)
    ref = LogisticRegression(C=1 / (l2 * len(x)), tol=1e-10, max_iter=10_000)
    ref.fit(feats.numpy(), y.numpy())
    torch.testing.assert_close(head.weight.detach(), torch.tensor(ref.coef_), atol=2e-3, rtol=0)
    assert out["head_probe_train_acc"] == pytest.approx(ref.score(feats.numpy(), y.numpy()))


def test_a_probe_started_run_begins_at_the_probe():
    """bp at lr 1e-9 does not move the net: its test accuracy is the start's. A random head
    on digits is near chance; the probe of the same random body is far above it."""
    kw = dict(data="digits", net="mlp:256", epochs=1, max_steps=1, store=False, progress=False,
              energy=False, options={"lr": 1e-9})  # fmt: skip
    probed = bb.train("bp", head_init="probe", **kw)
    plain = bb.train("bp", **kw)
    assert probed.metrics["head_probe_train_acc"] > 0.95
    assert probed.metrics["test_acc"] > 0.9
    assert plain.metrics["test_acc"] < 0.3


def test_probe_needs_a_linear_head():
    class NoHead(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(BeyondBPError, match="nn.Linear"):
        fit_head(NoHead(), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(BeyondBPError, match="head_init"):
        bb.train("bp", data="digits", head_init="nonsense", store=False, progress=False)
