"""Committed tables against the code: the cheap ones are trained again and must give the
committed numbers (``benchmarks/checks.yaml``); the machinery itself is checked on planted
drifts and a small git history."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from beyondbp.bench.freshness import (
    Check,
    check,
    later_commits,
    load_checks,
    made_at,
    measured_code,
    status,
)
from beyondbp.errors import BeyondBPError

REPO = Path(__file__).resolve().parents[1]
CHECKS = load_checks(REPO / "benchmarks" / "checks.yaml")


@pytest.mark.parametrize("spec", CHECKS, ids=[c.file for c in CHECKS])
def test_a_cheap_committed_table_is_what_the_code_gives(spec, shared_data):
    n, drifts = check(spec, REPO / "benchmarks" / "results", shared_data)
    assert n > 0
    assert not drifts, "\n".join(map(str, drifts))


def _tiny_results(tmp_path: Path) -> Path:
    """A results file with one finished run of a seconds-long cell, as the code gives it now."""
    import beyondbp as bb

    res = bb.train("bp", "digits", "mlp:16", epochs=1, max_steps=3, store=tmp_path / "r.sqlite",
                   progress=False, energy=False)  # fmt: skip
    run = json.loads(json.dumps(dataclasses.asdict(res.record), default=str))
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"command": "test", "runs": [run]}))
    return path


def test_check_passes_the_code_s_own_numbers_and_catches_a_planted_drift(tmp_path):
    path = _tiny_results(tmp_path)
    spec = Check(file="tiny.json", metrics={"peak_step_bytes": "0.5%", "test_acc": 0.01})
    assert check(spec, tmp_path) == (1, [])
    data = json.loads(path.read_text())
    data["runs"][0]["metrics"]["peak_step_bytes"] *= 1.02  # 2 %: beyond its 0.5 % noise
    data["runs"][0]["metrics"]["test_acc"] += 0.005  # half a point: within its noise
    path.write_text(json.dumps(data))
    n, drifts = check(spec, tmp_path)
    assert n == 1 and [d.metric for d in drifts] == ["peak_step_bytes"]
    assert "re-make the table" in str(drifts[0])
    with pytest.raises(BeyondBPError, match="no finished run matches"):
        check(Check(file="tiny.json", where={"net": "mlp:99"}, metrics={"test_acc": 0}), tmp_path)


def test_a_noise_must_be_a_number_or_a_percentage():
    with pytest.raises(ValueError, match="neither a number nor"):
        Check(file="x.json", metrics={"test_acc": "half a point"})


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def test_later_commits_are_those_that_touched_the_measured_code(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    _git(repo, "init", "-q")
    for k, v in {"user.email": "t@t", "user.name": "t", "commit.gpgsign": "false"}.items():
        _git(repo, "config", k, v)

    def commit(path: str, msg: str) -> str:
        (repo / path).write_text(msg)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", msg)
        return _git(repo, "rev-parse", "HEAD")

    made = commit("src/rule.py", "the rule")
    commit("README.md", "docs only")
    fix = commit("src/rule.py", "fix the rule")
    found = later_commits(made + "-dirty", ["src/rule.py"], repo / "src")  # from a subfolder
    assert found == [f"{fix[:7]} fix the rule"]
    assert later_commits(fix, ["src/rule.py"], repo) == []
    assert later_commits("0" * 40, ["src/rule.py"], repo) is None  # a commit git does not have


def test_status_names_the_commits_a_file_was_made_at(tmp_path):
    path = _tiny_results(tmp_path)
    runs = json.loads(path.read_text())["runs"]
    assert made_at(runs) == {runs[0]["env"]["git_commit"] or "unknown": 1}
    code = measured_code(["bp"])
    assert "src/beyondbp/rules/bp.py" in code and "src/beyondbp/harness" in code
    assert "src/beyondbp/rules/base.py" in code  # the rule's base class is measured too
    (s,) = status(tmp_path, repo=REPO)
    assert s.file == "tiny.json" and s.runs == 1 and "made at" in s.line()
