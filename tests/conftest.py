from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches (decoded data, matmul peak) and the default run store go to a temp folder."""
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
