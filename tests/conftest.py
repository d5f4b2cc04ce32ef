from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches (decoded data, matmul peak) and the default run store go to a temp folder. Under
    pytest-xdist each worker (and each process it starts) uses one torch thread, so N workers
    on N cores do not oversubscribe them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        os.environ["BEYONDBP_THREADS"] = "1"
    os.environ["BEYONDBP_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["BEYONDBP_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    os.environ.pop("BEYONDBP_DATA", None)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data; CI always has it, a developer machine may not."""
    if not (SHARED_DATA / "mnist").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the shared data at {SHARED_DATA}")
        pytest.skip(f"no shared data at {SHARED_DATA}")
    return SHARED_DATA


FAST = dict(progress=False, energy=False)


@pytest.fixture(autouse=True)
def _reseeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """BEYONDBP_TEST_SEED=N re-runs the suite's trainings with seed N (where a test sets none), to
    check that accuracy bars hold for seeds other than the one they were written against; CI's
    different CPU changes float rounding much as a different seed does.

    BEYONDBP_TEST_DEVICE=auto (or cuda) runs those trainings on the GPU (where the rule runs
    there and the test names no device): the same accuracy bars, checked on CUDA."""
    seed = os.environ.get("BEYONDBP_TEST_SEED")
    device = os.environ.get("BEYONDBP_TEST_DEVICE")
    if seed is None and device is None:
        return
    import beyondbp as bb
    import beyondbp.api

    original = beyondbp.api.train

    def train(*args, **kwargs):  # type: ignore[no-untyped-def]
        if seed is not None:
            kwargs.setdefault("seed", int(seed))
        if device is not None:
            kwargs.setdefault("device", device)
        return original(*args, **kwargs)

    monkeypatch.setattr(bb, "train", train)


def setup_rule(rule_name: str, net, options: dict, seed: int = 0):  # type: ignore[no-untyped-def]
    """A rule set up on ``net`` for digits-shaped data (1x8x8, 10 classes), as the harness would."""
    import torch

    from beyondbp.data import load_dataset
    from beyondbp.rules import make_rule
    from beyondbp.rules.base import SetupContext

    rule = make_rule(rule_name, options)
    rule.setup(net, load_dataset("digits").meta, SetupContext(torch.device("cpu"), seed, 1, 10, 8))
    return rule


class Planted:
    """Unpickling this calls ``Path.touch(marker)``: what a hostile file could make a loader
    run. Tests check that loading refuses it and the marker never appears."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return Path.touch, (Path(self.marker),)
