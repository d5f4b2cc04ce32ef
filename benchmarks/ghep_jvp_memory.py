"""ghep2024: peak CUDA memory (the allocator's own statistics, no profiler) of ghep's exact du/dβ
(forward-mode AD through T2 nudged iterations) and of its homeostatic loss with its backward, on
the CIFAR-10 net at batch 128, beside what the step probe's profiler read for the same du/dβ.

Run on a GPU machine from the repository root: ``PYTHONPATH=src python
benchmarks/ghep_jvp_memory.py``; one line per T2. Its output of 2026-12-04 (one H200) is quoted
in benchmarks/results/ghep2024-gpu.md.
"""

import torch

from beyondbp.data.core import DatasetMeta
from beyondbp.measure.memory import AllocatorTrace
from beyondbp.nets import build_net
from beyondbp.rules import make_rule
from beyondbp.rules.base import SetupContext

MIB = 2**20


def peak_of(fn) -> float:  # type: ignore[no-untyped-def]
    """MiB allocated at the peak of ``fn()`` above what was allocated before it."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / MIB


def main() -> None:
    dev, batch = torch.device("cuda"), 128
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    meta = DatasetMeta("cifar10", (3, 32, 32), 10, tuple("0123456789"), (0.0,) * 3, (1.0,) * 3, "")
    for t2 in (5, 10, 20):
        torch.manual_seed(0)
        net = build_net("vfcnn:16-32-64:t30", (3, 32, 32), 10).to(dev)
        rule = make_rule("ghep", {"n": 0, "beta": 1.0, "t1": None, "t2": t2, "homeostasis": 15.0})
        rule.setup(net, meta, SetupContext(dev, 0, 1, 10, batch))
        with torch.no_grad():
            u = net.free(x, 30)

        def dudbeta(rule=rule, u=u) -> None:  # type: ignore[no-untyped-def]
            with torch.no_grad():
                rule.dsigma_dbeta(x, y, u)

        jvp = peak_of(dudbeta)
        homeostasis = peak_of(lambda rule=rule, u=u: rule.homeostatic_loss(x, u).backward())
        with AllocatorTrace([*net.parameters(), x, y, *u]) as probe:
            dudbeta()
        print(f"T2 {t2}: du/dβ peak {jvp:.0f} MiB (the probe read {probe.peak / MIB:.0f}), "
              f"homeostatic loss and backward {homeostasis:.0f} MiB", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
