"""One writer for benchmark result files: ``NAME.md`` (the table, then how it was made) and
``NAME.json`` (the numbers, with the command and the environment), side by side."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def script_command() -> str:
    """The command that runs this process's script, as a user would type it."""
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(Path.cwd())
    return shlex.join(["python", str(script), *sys.argv[1:]])


def results_folder() -> Path:
    """``$BEYONDBP_RESULTS`` if set (a dry run that leaves the committed files alone), else
    ``results/`` beside the running script (``benchmarks/results``); made if missing."""
    beside = Path(sys.argv[0]).resolve().parent / "results"
    out = Path(os.environ.get("BEYONDBP_RESULTS") or beside)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_result(
    name: str,
    lines: Sequence[str],
    data: Any = None,
    *,
    folder: str | Path | None = None,
    command: str | None = None,
    device: str | torch.device = "cpu",
    runs: Sequence[dict[str, Any]] = (),
) -> list[Path]:
    """Write ``lines`` (Markdown) to ``FOLDER/NAME.md`` with the command, machine and versions
    under them, and ``data`` (when given) to ``FOLDER/NAME.json`` with the same provenance
    (a dict's keys beside ``command`` and ``environment``, anything else under ``data``).

    ``folder``: :func:`results_folder` by default. ``command``: the running script's by default. ``runs``: the
    stored environments of the runs tabled (their machines are listed)."""
    from beyondbp.measure import environment, provenance_markdown

    out = Path(folder) if folder is not None else results_folder()
    out.mkdir(parents=True, exist_ok=True)  # a given folder may not exist yet
    command = command or script_command()
    md = [*lines, "", *provenance_markdown(command, device, runs)]
    paths = [out / f"{name}.md"]
    paths[0].write_text("\n".join(md) + "\n")
    if data is not None:
        body = data if isinstance(data, dict) else {"data": data}
        record = {"command": command, "environment": environment(device), **body}
        paths.append(out / f"{name}.json")
        paths[1].write_text(json.dumps(record, indent=1, default=str) + "\n")
    return paths
