"""A linear-probe start: fit a net's last linear layer on the frozen features it receives.

Before a rule trains, ``head_init="probe"`` (a :class:`~beyondbp.harness.TrainConfig` setting)
replaces the random head by the multinomial logistic regression of the training labels on the
head's inputs, the rest of the net frozen: the first stage of LP-FT (Kumar et al. 2022,
arXiv 2202.10054). Zeroth-order fine-tuning needs it most: with a random head the signal an SPSA
estimate carries about the body is drowned by the head's own error (MeZO starts from a
prompt-based model whose "head" already means something; an encoder without a language-model
head has no such start).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from beyondbp.errors import BeyondBPError


def last_linear(net: nn.Module) -> nn.Linear:
    """The net's ``head`` if it is an ``nn.Linear``, else the last ``nn.Linear`` inside it."""
    head = getattr(net, "head", None)
    linears = [] if head is None else [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise BeyondBPError(
            "head_init='probe' needs a net whose `head` is (or ends in) an nn.Linear; "
            f"{type(net).__name__} has none: use head_init='random'"
        )
    return linears[-1]


@torch.no_grad()
def head_features(net: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The inputs the head's last linear layer receives for ``x`` (eval mode, no gradients)."""
    layer, feats = last_linear(net), []
    hook = layer.register_forward_hook(lambda m, inp, out: feats.append(inp[0].detach()))
    was_training = net.training
    net.eval()
    try:
        for i in range(0, len(x), batch_size):
            net(x[i : i + batch_size])
    finally:
        hook.remove()
        net.train(was_training)
    return torch.cat(feats).flatten(1)


def fit_head(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 256,
    l2: float = 1e-4,
    iterations: int = 200,
) -> dict[str, float]:
    """Set the head's last linear layer to the L2-regularised logistic regression of ``y`` on
    its input features (full-batch L-BFGS on mean cross-entropy + ``l2``/2 ‖W‖², the bias
    unregularised). Returns the probe's training loss and accuracy."""
    layer = last_linear(net)
    feats = head_features(net, x, batch_size).to(layer.weight.dtype)
    w = torch.zeros_like(layer.weight, requires_grad=True)
    b = None if layer.bias is None else torch.zeros_like(layer.bias, requires_grad=True)
    opt = torch.optim.LBFGS(
        [t for t in (w, b) if t is not None], max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def objective() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(F.linear(feats, w, b), y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(objective)
    with torch.no_grad():
        layer.weight.copy_(w)
        if b is not None:
            layer.bias.copy_(b)
        logits = layer(feats)
    return {
        "head_probe_loss": float(F.cross_entropy(logits, y)),
        "head_probe_train_acc": float((logits.argmax(1) == y).float().mean()),
    }
