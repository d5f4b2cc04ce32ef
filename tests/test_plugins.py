"""Rules as plugins, and the package's import layering."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

import beyondbp as bb
from beyondbp.rules import registry

from .conftest import FAST, REPO

PLUGIN = '''
"""An out-of-tree rule: plain SGD on the cross-entropy, in one module."""
import torch
import torch.nn.functional as F
from pydantic import Field

from beyondbp.rules import Rule, RuleOptions, register
from beyondbp.rules.base import LogUniform


class Options(RuleOptions):
    lr: float = Field(0.5, gt=0)


@register("tiny-sgd", "plain SGD (an out-of-tree test rule)")
class TinySGD(Rule):
    Options = Options
    search_space = {"lr": LogUniform(1e-3, 1.0)}
    stateful = ("opt",)

    def setup(self, net, meta, ctx):
        self.net = net
        self.opt = torch.optim.SGD(net.parameters(), lr=self.options.lr)

    def step(self, x, y):
        self.opt.zero_grad()
        scores = self.net(x)
        loss = F.cross_entropy(scores, y)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "correct": (scores.argmax(1) == y).sum()}
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """An installed distribution (a module and its dist-info with the entry point) on the path
    of this process and of every process it starts."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tiny_sgd_rule.py").write_text(PLUGIN)
    info = site / "tiny_sgd_rule-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-sgd-rule\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[beyondbp.rules]\ntiny-sgd = tiny_sgd_rule\n")
    monkeypatch.syspath_prepend(str(site))
    path = [str(site), *filter(None, [__import__("os").environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", ":".join(path))
    importlib.invalidate_caches()
    yield "tiny-sgd"
    registry._REGISTRY.pop("tiny-sgd", None)
    registry._loaded.discard("tiny_sgd_rule")
    sys.modules.pop("tiny_sgd_rule", None)


@pytest.mark.slow
def test_an_out_of_tree_rule_runs_in_a_grid_and_in_tune(plugin, tmp_path):
    assert plugin in bb.available_rules()
    store = tmp_path / "runs.sqlite"
    # two cells, each in a fresh worker process that finds the rule through its entry point
    res = bb.bench(rules=[plugin], nets=["mlp:32"], seeds=[0, 1], epochs=3, store=store,
                   progress=False, energy=False)  # fmt: skip
    assert [r.status for r in res.records] == ["finished", "finished"], [
        r.error for r in res.records
    ]
    assert all(r.metrics["test_acc"] > 0.8 for r in res.records)  # chance: 0.1

    from beyondbp.bench.tune import tune

    study = tune(plugin, "digits", "mlp:32", trials=2, epochs=2, store=store,
                 storage=f"sqlite:///{tmp_path / 'tune.db'}", **FAST)  # fmt: skip
    assert len(study.trials) == 2 and study.best_value > 0.5


def test_every_rule_module_is_an_entry_point():
    """A rule module that is not listed in pyproject's entry points would never be found."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split('[project.entry-points."beyondbp.rules"]')[1].split("\n[")[0]
    listed = set(re.findall(r'^"([^"]+)" = "beyondbp\.rules\.\w+"', section, re.M))
    registered = set()
    for path in (REPO / "src/beyondbp/rules").glob("*.py"):
        registered |= set(re.findall(r'@register\(\s*"([^"]+)"', path.read_text()))
    assert registered == listed


def _imports(path: Path, package: str) -> set[str]:
    """The beyondbp modules a module imports at import time (not inside functions, not under
    TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:  # module level only
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else ():
            if isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                if sub.module.startswith("beyondbp"):
                    found.add(sub.module)
                    found |= {f"{sub.module}.{a.name}" for a in sub.names}
            elif isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.startswith("beyondbp")}
    return found


def test_no_import_cycles_inside_the_package():
    src = REPO / "src"
    modules = {
        ".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (src / "beyondbp").rglob("*.py")
    }
    graph = {m: {i for i in _imports(p, m) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ that re-exports its submodules is not a cycle with them
    for m in graph:
        graph[m] = {i for i in graph[m] if not m.startswith(i + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*path[path.index(n) :], n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
