"""Checkpoints written atomically: a killed process leaves the previous checkpoint intact."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from beyondbp.errors import BeyondBPError


class CheckpointError(BeyondBPError):
    """A checkpoint that cannot be used: unreadable (torn, corrupt) or holding more than data."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, read as data only (``weights_only``); one with pickled objects
    or callables is refused with a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise BeyondBPError(f"no checkpoint at {path}; the run cannot be resumed (start it anew)")
    try:
        # data only (tensors, numbers, strings, lists, dicts): opening a checkpoint someone
        # else wrote runs no code of theirs
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [x.strip() for x in str(e).splitlines() if "Unsupported" in x or "GLOBAL" in x]
        what = lines[0][:200] if lines else "objects that loading would build"
        raise CheckpointError(
            f"checkpoint {path} holds more than data ({what}): refused, as loading it could run "
            "code; start the run anew"
        ) from None
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({e}); start the run anew") from e
