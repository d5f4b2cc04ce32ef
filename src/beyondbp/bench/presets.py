"""Paper presets: a paper's setup as data (grids of rules, nets, hyperparameters and budgets)
together with the paper's own numbers, so ``beyondbp reproduce`` can print ours next to theirs.

Each preset is a YAML file in ``beyondbp/presets/``, named ``<preset name>.yaml``; rule issues add
theirs there (or call :func:`register_preset` from their own module). The files are read once, on
the first use of the registry (:data:`PRESETS`, :func:`get_preset`, :func:`register_preset`).

A preset file's keys::

    name: spyra2025                  # the file's name without .yaml
    description: one line for `beyondbp reproduce --list`
    source: the paper, and where its numbers come from
    notes: caveats printed under the table (optional)
    metric: test_acc                 # the score of the "ours" column: test_acc (%, default),
                                     # test_auc (%, link prediction) or
                                     # test_return (an episodic task's mean return)
    columns: {test_pgd_acc: PGD-20 %}  # more metrics to table, with their headers (optional)
    solved_at: {gym:CartPole-v1: 475}  # a "solved" column: seeds whose score reaches the bar;
                                     # `chance` = the task's floor (Task.chance) (optional)
    quick: {epochs: 2}               # config overrides of a quick run (optional; this default)
    shared: {...}                    # optional, ignored: a place for YAML anchors (&name) that
                                     # the grids below refer to (*name, or `<<: *name` to merge)
    grids:                           # a list of GridSpec fields (beyondbp.bench.grid.GridSpec)
      - {rules: [bp], datasets: [mnist], nets: [cnn3], seeds: [0, 1, 2], options: {bp: {...}},
         config: {...}, rule_config: {...}, target_acc: 0.9}
    paper:                           # the paper's numbers (optional); variant: the options a
      - {rule: cafo, dataset: mnist, net: cnn3, variant: "block_training=dfa",   # number is for
         test_acc: 99.02, time_s: 84.5, energy_wh: 1.64}
    subset_of: spyra2025             # optional: start from that preset's grids and paper
    rules: [bp]                      # numbers, kept to these rules (then this file's own, if any)

Numbers such as ``1e-3`` are read as floats (plain YAML 1.1 would read a string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from beyondbp.bench.grid import GridSpec
from beyondbp.errors import BeyondBPError, UnknownNameError, describe_validation

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


@dataclass(frozen=True)
class PaperNumber:
    test_acc: float  # percent, as printed in the paper
    time_s: float | None = None
    energy_wh: float | None = None


Metric = Literal["test_acc", "test_auc", "test_return"]
PERCENT = ("_acc", "_auc", "_hits50")  # metrics in [0, 1], tabled as percentages


def is_percent(metric: str) -> bool:
    """Whether a metric is a fraction shown in percent (accuracy, ROC-AUC, Hits@50)."""
    return metric.endswith(PERCENT)


PaperKey = tuple[str, ...]
"""(rule, dataset, net), or (rule, dataset, net, "option=value, ...") for a number that belongs to
one variant of a rule (e.g. ``("cafo", "mnist", "cnn3", "block_training=dfa")``)."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    source: str  # the paper, and where its numbers come from
    grids: tuple[GridSpec, ...]
    paper: dict[PaperKey, PaperNumber] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=lambda: {"epochs": 2})  # config overrides
    notes: str = ""
    metric: Metric = "test_acc"  # the score of the "ours" column
    columns: dict[str, str] = field(default_factory=dict)  # more metrics: header by key
    solved_at: dict[str, float | Literal["chance"]] = field(default_factory=dict)  # by dataset

    def paper_number(
        self, rule: str, dataset: str, net: str, options: dict[str, Any]
    ) -> PaperNumber | None:
        """The paper's number for a run: the variant key whose options all match the run's
        (the one naming most options), else the plain (rule, dataset, net) key."""
        best: tuple[int, PaperNumber] | None = None
        for key, number in self.paper.items():
            if key[:3] != (rule, dataset, net):
                continue
            wanted = _parse_variant(key[3]) if len(key) > 3 else {}
            matches = all(str(options.get(k)) == v for k, v in wanted.items())
            if matches and (best is None or len(wanted) > best[0]):
                best = (len(wanted), number)
        return best[1] if best else None


def _parse_variant(text: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in text.split(",") if part.strip())
    return {k.strip(): v.strip() for k, v in pairs}


# -- preset files --------------------------------------------------------------------------------


class _PaperEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str
    dataset: str
    net: str
    variant: str | None = None  # "option=value, ..."
    test_acc: float  # the paper's score in the preset's metric (percent for test_acc)
    time_s: float | None = None
    energy_wh: float | None = None

    def key(self) -> PaperKey:
        base = (self.rule, self.dataset, self.net)
        return (*base, self.variant) if self.variant is not None else base


class _PresetFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    source: str
    notes: str = ""
    metric: Metric = "test_acc"
    columns: dict[str, str] = {}
    solved_at: dict[str, float | Literal["chance"]] = {}
    quick: dict[str, Any] = {"epochs": 2}
    shared: Any = None  # anchors only
    subset_of: str | None = None
    rules: list[str] | None = None
    grids: list[GridSpec] = []
    paper: list[_PaperEntry] = []


def _yaml_loader() -> type:
    """A safe YAML loader that reads ``1e-3`` as a float (YAML 1.2; YAML 1.1 wants ``1.0e-3``)
    and refuses a key written twice in one mapping (YAML would keep the last silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                    if key is None or key == "<<":
                        continue
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {key!r} written twice", key_node.start_mark
                        )
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )
    return Loader


def _parse(path: Path) -> _PresetFile:
    import yaml

    def fail(problem: str) -> BeyondBPError:
        return BeyondBPError(f"preset file {path}: {' '.join(problem.split())}")

    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())
    except OSError as e:
        raise fail(f"cannot be read ({e.strerror or e})") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = f" ({e.context})" if e.context else ""
        raise fail(f"does not parse: {where}{e.problem}{context}") from None
    except yaml.YAMLError as e:
        raise fail(f"does not parse: {e}") from None
    if not isinstance(data, dict):
        raise fail(f"expected a mapping of preset fields, found {type(data).__name__}")
    try:
        spec = _PresetFile.model_validate(data)
    except ValidationError as e:
        raise fail(describe_validation(e)) from None
    if spec.name != path.stem:
        raise fail(f"name {spec.name!r} differs from the file's name {path.stem!r}")
    if spec.rules is not None and spec.subset_of is None:
        raise fail("'rules' keeps a subset of another preset: name it with 'subset_of'")
    for entry in spec.paper:
        parts = (entry.variant or "").split(",")
        if entry.variant is not None and not all("=" in p for p in parts if p.strip()):
            raise fail(f"paper variant {entry.variant!r}: write 'option=value, option=value'")
    return spec


def load_preset_file(path: str | Path, _loading: tuple[Path, ...] = ()) -> Preset:
    """The preset in a YAML file (a preset it is a subset of is read from the same folder).

    Raises :class:`BeyondBPError`, one line naming the file, when the file does not parse or
    validate."""
    path = Path(path)
    spec = _parse(path)
    grids: list[GridSpec] = []
    paper: dict[PaperKey, PaperNumber] = {}
    if spec.subset_of is not None:
        base_path = path.parent / f"{spec.subset_of}.yaml"
        if base_path.resolve() in _loading or base_path.resolve() == path.resolve():
            raise BeyondBPError(f"preset file {path}: subset_of {spec.subset_of!r} is circular")
        if not base_path.is_file():
            raise BeyondBPError(
                f"preset file {path}: subset_of {spec.subset_of!r}: no file {base_path}"
            )
        base = load_preset_file(base_path, (*_loading, path.resolve()))
        keep = set(spec.rules) if spec.rules is not None else None
        for grid in base.grids:
            rules = [r for r in grid.rules if keep is None or r in keep]
            if rules:
                grids.append(
                    grid if rules == grid.rules else grid.model_copy(update={"rules": rules})
                )
        paper = {k: v for k, v in base.paper.items() if keep is None or k[0] in keep}
    grids += spec.grids
    for entry in spec.paper:
        if entry.key() in paper:
            raise BeyondBPError(f"preset file {path}: paper number {entry.key()} given twice")
        paper[entry.key()] = PaperNumber(entry.test_acc, entry.time_s, entry.energy_wh)
    return Preset(
        name=spec.name,
        description=spec.description,
        source=spec.source,
        grids=tuple(grids),
        paper=paper,
        quick=spec.quick,
        notes=spec.notes,
        metric=spec.metric,
        columns=spec.columns,
        solved_at=spec.solved_at,
    )


def load_presets(folder: str | Path = PRESET_DIR) -> dict[str, Preset]:
    """Every ``*.yaml`` preset in ``folder``, by name (in file name order)."""
    files = sorted(Path(folder).glob("*.yaml"))
    return {(p := load_preset_file(f)).name: p for f in files}


# -- the registry --------------------------------------------------------------------------------

PRESETS: dict[str, Preset]  # read from PRESET_DIR on first access (module __getattr__ below)
_registry: dict[str, Preset] | None = None


def _presets() -> dict[str, Preset]:
    global _registry
    if _registry is None:
        _registry = load_presets()
        globals()["PRESETS"] = _registry  # later look-ups find it without __getattr__
    return _registry


def register_preset(preset: Preset) -> Preset:
    _presets()[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset:
    presets = _presets()
    if name not in presets:
        raise UnknownNameError("preset", name, presets)
    return presets[name]


def __getattr__(name: str) -> Any:
    if name == "PRESETS":
        return _presets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
