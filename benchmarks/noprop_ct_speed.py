"""NoProp-CT on a CPU (issue 5): the cost of its inference ODE and of a training step.

Inference integrates T = 1,000 Heun steps; the block's image path sees neither the latent nor
the time, so out of training it runs once per batch (``NoPropNet.integrate``). This times 50
Heun steps over 1,000 MNIST-sized inputs with that cached pass and with the image path run at
every step (the module flagged as training, which turns the cache off), then one training step
(batch 128, Adam) of the time-conditioned block; one torch thread, untrained net.

    python benchmarks/noprop_ct_speed.py     # writes benchmarks/results/noprop_ct_speed.md
"""

from __future__ import annotations

import time

import torch

from beyondbp.bench.results import write_result
from beyondbp.nets.noprop import NoPropNet


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = NoPropNet((1, 28, 28), 10, steps=1000, kind="ct").eval()
    x = torch.randn(1000, 1, 28, 28)
    with torch.no_grad():
        t0 = time.perf_counter()
        net.integrate(x, "heun", steps=50)
        cached = time.perf_counter() - t0
        net.training = True  # only the flag (dropout and batch norm stay as they are): no cache
        t0 = time.perf_counter()
        net.integrate(x, "heun", steps=50)
        full = time.perf_counter() - t0
    net.train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xb, z, t = torch.randn(128, 1, 28, 28), torch.randn(128, 10), torch.rand(128)
    for i in range(25):
        if i == 5:
            t0 = time.perf_counter()
        _, u = net.denoise_at(t, xb, z)
        loss = (u - z).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    step = (time.perf_counter() - t0) / 20
    scale = 10 * 1000 / 50  # 10,000 test images, 1,000 steps
    md = [
        "# NoProp-CT on one CPU core: inference ODE and training step",
        "",
        "| what | seconds |",
        "|---|---:|",
        f"| 50 Heun steps, 1,000 images, image path once | {cached:.2f} |",
        f"| 50 Heun steps, 1,000 images, image path every step | {full:.2f} |",
        f"| MNIST test set (10,000) x 1,000 steps, image path once (x{scale:.0f}) | {cached * scale:.0f} |",
        f"| MNIST test set (10,000) x 1,000 steps, image path every step (x{scale:.0f}) | {full * scale:.0f} |",
        f"| one training step, batch 128 | {step:.3f} |",
        f"| one MNIST epoch (50,000 / 128 = 391 steps) | {step * 391:.0f} |",
    ]
    data = {"heun50_cached_s": cached, "heun50_full_s": full, "train_step_s": step}
    write_result("noprop_ct_speed", md, data)
    print("\n".join(md))


if __name__ == "__main__":
    main()
