"""Are the committed tables still what the code gives? Two answers, one per kind of table.

- :func:`status`: for every results file that holds runs, the commit(s) its runs were made at
  and the later commits that touched the code they measure (their rules' modules, and the
  harness, meters, nets, tasks and data loaders every run goes through). An expensive table is
  not re-made: this says how far behind it may be.
- :func:`check`: a cheap table's runs are trained again, as stored (rule, options, config,
  seeds), and the numbers compared with the committed ones within their stated noise; any
  difference is a :class:`Drift`. ``benchmarks/checks.yaml`` names the runs and the noise; the
  test suite runs it, so a change that moves a committed number fails CI until the table is
  made again.
"""

from __future__ import annotations

import inspect
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from beyondbp.errors import BeyondBPError

SHARED_CODE = ("harness", "measure", "nets", "tasks", "data")
"""Packages of ``beyondbp`` every run goes through: a commit touching them may move any number."""


def load_runs(path: str | Path) -> list[dict[str, Any]]:
    """The run records of a results file (``.json`` or ``.json.gz``), as stored: none if it has
    no runs (some results files hold summary rows in ``runs``, not run records)."""
    from beyondbp.runs.store import run_rows

    return [r for r in run_rows(path) or [] if isinstance(r, dict) and "rule" in r]


def made_at(runs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Runs per commit they were made at (``-dirty``: some with uncommitted changes on top)."""
    out: dict[str, int] = {}
    dirty = set()
    for r in runs:
        c = str((r.get("env") or {}).get("git_commit") or "unknown")
        if c.endswith("-dirty"):
            c = c.removesuffix("-dirty")
            dirty.add(c)
        out[c] = out.get(c, 0) + 1
    return {(f"{c}-dirty" if c in dirty else c): n for c, n in out.items()}


def measured_code(rules: Iterable[str], package: Path | None = None) -> list[str]:
    """The source paths (relative to the repository) of the code these rules' runs measure:
    each rule's class and its beyondbp base classes, and :data:`SHARED_CODE`."""
    from beyondbp.rules.registry import get_rule

    pkg = package or Path(__file__).resolve().parents[1]
    repo = pkg.parents[1]
    paths = {str((pkg / p).relative_to(repo)) for p in SHARED_CODE}
    for name in set(rules):
        try:
            cls = get_rule(name)
        except Exception:  # a rule since renamed or removed: its module is unknown
            continue
        for base in inspect.getmro(cls):
            if not base.__module__.startswith("beyondbp."):
                continue
            f = inspect.getsourcefile(base)
            if f and Path(f).resolve().is_relative_to(pkg):
                paths.add(str(Path(f).resolve().relative_to(repo)))
    return sorted(paths)


def later_commits(commit: str, paths: Sequence[str], repo: str | Path) -> list[str] | None:
    """``git log --oneline COMMIT..HEAD -- PATHS`` in ``repo``; None if git cannot say (no
    repository, a commit it does not have)."""
    commit = commit.removesuffix("-dirty")
    try:
        out = subprocess.run(
            ["git", "log", "--format=%h %s", f"{commit}..HEAD", "--", *(f":(top){p}" for p in paths)],
            cwd=repo, capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return [line for line in out.stdout.splitlines() if line]


@dataclass
class Staleness:
    """One results file: where its runs were made, and what changed in their code since."""

    file: str
    runs: int
    commits: dict[str, int]
    later: list[str] | None  # later commits touching the measured code; None: unknown

    def line(self) -> str:
        made = ", ".join(
            f"{c[:12]}{'-dirty' if c.endswith('-dirty') else ''} ({n})"
            for c, n in self.commits.items()
        )
        if self.later is None:
            since = "later changes unknown (a commit git does not have)"
        elif not self.later:
            since = "no later commit touched the code it measures"
        else:
            since = f"{len(self.later)} later commits touched the code it measures"
        return f"{self.file} ({self.runs} runs): made at {made}; {since}"


def status(folder: str | Path, repo: str | Path | None = None) -> list[Staleness]:
    """:class:`Staleness` of every results file in ``folder`` that holds runs."""
    folder = Path(folder)
    repo = Path(repo) if repo is not None else folder
    out = []
    for path in sorted([*folder.glob("*.json"), *folder.glob("*.json.gz")]):
        runs = load_runs(path)
        if not runs:
            continue
        commits = made_at(runs)
        paths = measured_code({r["rule"] for r in runs})
        later: list[str] | None = []
        for c in commits:
            found = None if c == "unknown" else later_commits(c, paths, repo)
            if found is None:
                later = None
                break
            later = sorted(set(later or []) | set(found))
        out.append(Staleness(path.name, len(runs), commits, later))
    return out


# -- re-making cheap tables -------------------------------------------------------------------


class Check(BaseModel):
    """One cheap table to re-make: which of its runs, and each number's noise: ``"1%"`` is
    relative, a number is absolute (in the metric's unit: an accuracy of 0.005 is half a
    point)."""

    model_config = ConfigDict(extra="forbid")

    file: str
    where: dict[str, Any] = Field(default_factory=dict)  # run fields that must match
    metrics: dict[str, float | str]

    @field_validator("metrics")
    @classmethod
    def _tolerances(cls, v: dict[str, float | str]) -> dict[str, float | str]:
        for name, tol in v.items():
            if isinstance(tol, str) and not _is_percent(tol):
                raise ValueError(f"{name}: noise {tol!r} is neither a number nor 'N%'")
        return v


def _is_percent(text: str) -> bool:
    try:
        float(text.removesuffix("%"))
    except ValueError:
        return False
    return text.endswith("%")


def load_checks(path: str | Path) -> list[Check]:
    """The checks of a YAML file (a list of :class:`Check` fields)."""
    path = Path(path)
    try:
        items = yaml.safe_load(path.read_text()) or []
        return [Check(**item) for item in items]
    except (OSError, yaml.YAMLError, TypeError, ValueError) as e:
        raise BeyondBPError(f"cannot read the checks {path}: {e}") from e


@dataclass
class Drift:
    """A committed number the code no longer gives."""

    file: str
    run: str
    metric: str
    committed: Any
    now: Any
    noise: float | str

    def __str__(self) -> str:
        return (
            f"{self.file} {self.run}: {self.metric} committed {self.committed}, now {self.now} "
            f"(noise {self.noise}); re-make the table (its .md says how) and commit it"
        )


def _within(committed: Any, now: Any, noise: float | str) -> bool:
    if committed is None or now is None:
        return committed is None and now is None
    if isinstance(noise, str):  # relative
        return abs(now - committed) <= float(noise.removesuffix("%")) / 100 * abs(committed)
    return abs(now - committed) <= noise


def _matches(run: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    for key, want in where.items():
        have = run.get(key, (run.get("config") or {}).get(key))
        if have != want:
            have = (run.get("options") or {}).get(key, have)
        if have != want:
            return False
    return True


def rerun(run: Mapping[str, Any], data_dir: str | Path | None = None) -> dict[str, Any]:
    """Train a stored run again as it was configured; its metrics (nothing is stored)."""
    from beyondbp.runner import train

    skip = {"data_dir", "progress", "checkpoint", "device", "energy"}
    config = {k: v for k, v in (run.get("config") or {}).items() if k not in skip}
    result = train(run["rule"], run["dataset"], run["net"], options=run.get("options") or {},
                   data_dir=data_dir, store=False, progress=False, checkpoint=False, energy=False,
                   **config)  # fmt: skip
    return result.metrics


def check(
    spec: Check, folder: str | Path, data_dir: str | Path | None = None
) -> tuple[int, list[Drift]]:
    """Re-make ``spec``'s runs of ``folder/spec.file``: how many, and the numbers that moved."""
    runs = [r for r in load_runs(Path(folder) / spec.file) if r.get("status") == "finished"]
    chosen = [r for r in runs if _matches(r, spec.where)]
    if not chosen:
        raise BeyondBPError(f"{spec.file}: no finished run matches {spec.where}; fix the check")
    drifts = []
    for run in chosen:
        now = rerun(run, data_dir)
        label = f"{run['rule']}/{run['dataset']}/{run['net']}/seed {run.get('seed')}"
        for metric, noise in spec.metrics.items():
            old, new = (run.get("metrics") or {}).get(metric), now.get(metric)
            if not _within(old, new, noise):
                drifts.append(Drift(spec.file, label, metric, old, new, noise))
    return len(chosen), drifts
