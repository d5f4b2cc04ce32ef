"""NoProp-DT: the noise schedule and noising against their closed forms, the inference chain with a
perfect denoiser, block-local updates, and digits accuracy."""

from __future__ import annotations

import pytest
import torch

import beyondbp as bb
from beyondbp.data import load_dataset
from beyondbp.errors import BeyondBPError
from beyondbp.nets import build_net
from beyondbp.nets.noprop import NoPropNet, noprop_alpha_bar, posterior_coefficients
from beyondbp.rules import make_rule
from beyondbp.rules.base import SetupContext

from .conftest import FAST, setup_rule


def test_schedule_runs_from_noise_to_nearly_clean_with_finite_snr():
    ab = noprop_alpha_bar(10)
    assert ab.shape == (11,) and torch.all(ab.diff() > 0)
    assert ab[0] < 1e-3 and 0.9 < ab[-1] < 1.0


def test_noising_matches_its_closed_form():
    torch.manual_seed(0)
    net = NoPropNet((1, 8, 8), 10, steps=5, embedding="learned", embed_dim=4)
    y = torch.full((200_000,), 3)
    g = torch.Generator().manual_seed(1)
    for t in (0, 2, 5):
        z = net.noised(y, t, generator=g).detach()
        ab = net.alpha_bar[t]
        torch.testing.assert_close(z.mean(0), ab.sqrt() * net.embed[3].detach(), atol=6e-3, rtol=0)
        torch.testing.assert_close(z.var(0), (1 - ab).expand(4), atol=1e-2, rtol=0)


def test_inference_chain_with_a_perfect_denoiser_returns_the_label_embedding():
    torch.manual_seed(0)
    net = NoPropNet((1, 8, 8), 10, steps=10, embedding="learned", embed_dim=6)
    y = torch.tensor([0, 3, 7] * 20_000)
    u = net.embed[y].detach()
    net.denoise = lambda t, x, z: (None, u)  # a denoiser that always returns u_y
    x = torch.zeros(len(y), 1, 8, 8)
    # the means: the chain lands on sqrt(ᾱ_T) u_y, the label embedding up to the last noise level
    mean_chain = net.chain(x).detach()
    torch.testing.assert_close(mean_chain, net.alpha_bar[-1].sqrt() * u, atol=0.05, rtol=0)
    # sampling: z_T ~ q(z_T | y) (z_0 ~ N(0, I) ≈ q(z_0 | y) since ᾱ_0 ≈ 0)
    z = net.chain(x, sample=True).detach()
    noise = z - net.alpha_bar[-1].sqrt() * u
    torch.testing.assert_close(noise.mean(0), torch.zeros(6), atol=5e-3, rtol=0)
    torch.testing.assert_close(noise.var(0), (1 - net.alpha_bar[-1]).expand(6), atol=2e-3, rtol=0)
    # nearest embedding of the final latent is the true label
    nearest = torch.cdist(mean_chain, net.embed.detach()).argmin(1)
    assert torch.equal(nearest, y)


def test_posterior_coefficients_compose_the_closed_form():
    ab = noprop_alpha_bar(10)
    a, b, c = posterior_coefficients(ab)
    # with u known, the mean of z_t given z_{t-1} ~ q(z_{t-1}|y) is sqrt(ᾱ_t) u and its variance 1 − ᾱ_t
    mean = a + b * ab[:-1].sqrt()
    var = b**2 * (1 - ab[:-1]) + c
    torch.testing.assert_close(mean, ab[1:].sqrt())
    torch.testing.assert_close(var, 1 - ab[1:])


def _rule(net, **options):
    return setup_rule("noprop", net, options)


def test_a_step_trains_one_block_and_no_gradient_crosses_blocks():
    torch.manual_seed(0)
    net = build_net("noprop:4", (1, 8, 8), 10)
    rule = _rule(net)
    before = [{k: v.clone() for k, v in b.state_dict().items()} for b in net.blocks]
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    torch.manual_seed(5)
    t = int(torch.randint(1, 5, ()))  # the block the step will sample
    torch.manual_seed(5)
    rule.step(x, y)
    for i, block in enumerate(net.blocks):
        changed = any(not torch.equal(v, before[i][k]) for k, v in block.state_dict().items())
        assert changed == (i == t - 1), (i, t)
        has_grad = any(p.grad is not None for p in block.parameters())
        assert not has_grad  # gradients freed after the step


def test_noprop_refuses_other_nets():
    with pytest.raises(BeyondBPError, match="--net noprop"):
        _rule(build_net("mlp:8", (1, 8, 8), 10))


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["noprop:3", "noprop:3:learned-8"])
def test_noprop_learns_digits(spec):
    res = bb.train("noprop", "digits", spec, epochs=15, batch_size=32, patience=None,
                   store=False, **FAST)  # fmt: skip
    assert res.metrics["test_acc"] >= 0.9, res.metrics


def test_fm_flow_with_a_perfect_denoiser_lands_on_the_label_embedding():
    torch.manual_seed(0)
    net = NoPropNet((1, 8, 8), 10, steps=7, embedding="learned", embed_dim=5, kind="fm")
    y = torch.tensor([1, 4, 9])
    u = net.embed[y].detach()
    net.denoise_at = lambda t, x, z, image=None: (None, u)
    x = torch.zeros(3, 1, 8, 8)
    for solver in ("euler", "heun"):  # the straight path is followed exactly, step by step
        torch.testing.assert_close(net.integrate(x, solver, sample=True).detach(), u)
    assert torch.equal(net.scores(x).argmax(1), y)


def test_ct_flow_with_a_perfect_denoiser_keeps_the_noise_and_reaches_the_last_level():
    torch.manual_seed(0)
    net = NoPropNet((1, 8, 8), 10, steps=400, embedding="learned", embed_dim=5, kind="ct")
    y = torch.tensor([2, 6])
    u = net.embed[y].detach()
    net.denoise_at = lambda t, x, z, image=None: (None, u)
    ab0, ab1 = (torch.sigmoid(net.log_snr(torch.tensor(v))).detach() for v in (0.0, 1.0))
    eps0 = (0 - ab0.sqrt() * u) / (1 - ab0).sqrt()  # the noise implied by z_0 = 0
    z1 = net.integrate(torch.zeros(2, 1, 8, 8), "heun").detach()
    torch.testing.assert_close(z1, ab1.sqrt() * u + (1 - ab1).sqrt() * eps0, atol=2e-3, rtol=0)


@pytest.mark.parametrize("kind", ["ct", "fm"])
def test_inference_runs_the_image_path_once_and_gives_the_same_flow(kind):
    torch.manual_seed(0)
    net = NoPropNet((1, 8, 8), 10, steps=6, kind=kind).eval()
    x = torch.randn(4, 1, 8, 8)
    calls = []
    net.blocks[0].image.register_forward_hook(lambda *a: calls.append(1))
    z = net.integrate(x, "heun")
    assert len(calls) == 1
    # the definition: every velocity evaluation runs the whole block (image path included)
    ref, grid = torch.zeros(4, 10), torch.linspace(0, 1, 7)
    for k in range(6):
        t0, t1 = grid[k], grid[k + 1]
        f0 = net.velocity(t0, x, ref)
        if kind == "fm" and k == 5:
            ref = ref + (t1 - t0) * f0
        else:
            f1 = net.velocity(t1.clamp(max=1 - 1e-4), x, ref + (t1 - t0) * f0)
            ref = ref + (t1 - t0) / 2 * (f0 + f1)
    assert len(calls) == 1 + (12 if kind == "ct" else 11)  # one per velocity evaluation
    torch.testing.assert_close(z, ref)


def test_variant_must_match_the_net():
    with pytest.raises(BeyondBPError, match="noprop:ct"):
        _rule(build_net("noprop:3", (1, 8, 8), 10), variant="ct")


@pytest.mark.slow
@pytest.mark.parametrize("spec,epochs,want", [("noprop:10:fm", 8, 0.9), ("noprop:10:ct", 16, 0.6)])
def test_continuous_noprop_learns_digits(spec, epochs, want):
    # CT learns slowly on digits (seeds 0-3: 76-88% after 12 epochs, 78-93% after 24, still rising);
    # the bar is set well above chance (10%) and below every seed we measured.
    res = bb.train("noprop", "digits", spec, epochs=epochs, batch_size=32, patience=None,
                   store=False, **FAST)  # fmt: skip
    assert res.metrics["test_acc"] >= want, res.metrics


def test_val_steps_integrates_fewer_steps_in_validation_only(monkeypatch):
    seen: list[tuple[int | None, bool]] = []
    integrate = NoPropNet.integrate

    def spy(self, x, solver="heun", sample=False, steps=None):  # type: ignore[no-untyped-def]
        seen.append((steps, len(x)))
        return integrate(self, x, solver, sample, steps)

    monkeypatch.setattr(NoPropNet, "integrate", spy)
    data = load_dataset("digits")
    bb.train("noprop", data, "noprop:9:fm", options={"val_steps": 3}, epochs=1, max_steps=4,
             store=False, patience=None, eval_batch_size=10_000, **FAST)  # fmt: skip
    val, test = len(data.val), len(data.test)
    # the inference-memory probe of one batch (at T), one validation (max_steps ends the first
    # epoch), then the test at T = 9
    assert seen == [(None, 128), (3, val), (None, test)]
    with pytest.raises(BeyondBPError, match="val_steps"):
        _rule(build_net("noprop:3", (1, 8, 8), 10), val_steps=2)


def test_prototype_embeddings_are_the_training_images_nearest_their_class_means():
    data = load_dataset("digits")
    net = build_net("noprop:3:prototype", data.meta.input_shape, 10)
    rule = make_rule("noprop", {})
    rule.setup(net, data.meta, SetupContext(torch.device("cpu"), 0, 1, 10, 8, train=data.train))
    flat, y = data.train.x.flatten(1), data.train.y
    for c in range(10):
        members = flat[y == c]
        want = members[(members - members.mean(0)).pow(2).sum(1).argmin()]
        assert torch.equal(net.embed[c].detach(), want)
    assert net.embed.requires_grad  # learned from there on


@pytest.mark.parametrize("spec", ["noprop:3:embed-head", "noprop:3:learned-32:embed-head"])
def test_embed_head_scores_each_class_by_its_embedding(spec):
    torch.manual_seed(0)
    net = build_net(spec, (1, 8, 8), 10)
    assert net.head == "embed"
    # the chain's end at a class's own embedding is read as that class: every class reachable
    assert net.classifier(net.embed).argmax(1).tolist() == list(range(10))
    assert build_net("noprop:3", (1, 8, 8), 10).head == "random"


def test_embed_head_follows_prototypes():
    data = load_dataset("digits")
    net = build_net("noprop:3:prototype:embed-head", data.meta.input_shape, 10)
    net.init_prototypes(data.train.x, data.train.y)
    assert torch.equal(net.classifier.weight, net.embed)
