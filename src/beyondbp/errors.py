"""User-facing errors: each says what was wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class BeyondBPError(Exception):
    """An error caused by the user's input or environment, with a fix in its message."""


class UnknownNameError(BeyondBPError, KeyError):
    """A rule, dataset, net or option name that does not exist."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], where: str = "") -> None:
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        where = f" for {where}" if where else ""
        super().__init__(f"unknown {kind} {name!r}{where}; valid {kind}s: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return self.args[0]


class DataError(BeyondBPError):
    """A dataset file that is missing, corrupt or inconsistent."""


def describe_validation(e: Any) -> str:
    """A pydantic ValidationError as one line: ``field: problem; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
