"""The environment a run executed in: hardware, versions, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} x{os.cpu_count()}"


def git_commit() -> str | None:
    """The commit of the beyondbp checkout (for an editable install), else of the cwd's repo."""
    for where in (Path(__file__).resolve().parents[3], Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if out.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    return None


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def environment(device: str | torch.device = "cpu") -> dict[str, object]:
    """Everything needed to say where a number came from."""
    device = torch.device(device)
    return {
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "beyondbp": _version("beyondbp"),
        "codecarbon": _version("codecarbon"),
        "git_commit": git_commit(),
    }


def provenance_markdown(
    command: str,
    device: str | torch.device = "cpu",
    runs: Sequence[dict[str, Any]] = (),
) -> list[str]:
    """Markdown lines that say how a result file was made: the command, the machine, versions.
    ``runs``: the stored environments of the runs in the file; the machines they ran on are
    listed too (a table may be written on another machine than its runs')."""
    env = environment(device)
    gpu = f", GPU {env['gpu']}" if env["gpu"] else ""
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {env['cpu']} ({env['cpu_count']} cores, torch threads "
        f"{env['torch_threads']}){gpu}, {env['platform']}  ",
        "Versions: "
        + ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "beyondbp", "git_commit")),
    ]
    machines: dict[str, int] = {}
    for r in runs:
        if not r:
            continue
        where = f"{r.get('device')} on {r.get('cpu')} ({r.get('cpu_count')} cores)"
        if r.get("gpu"):
            where += f", GPU {r['gpu']}"
        where += f", torch {r.get('torch')}, commit {str(r.get('git_commit'))[:12]}"
        machines[where] = machines.get(where, 0) + 1
    if machines:
        lines[-1] += "  "
        lines.append("Runs made on: " + "; ".join(f"{w} ({n} runs)" for w, n in machines.items()))
    return lines
