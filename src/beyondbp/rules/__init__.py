"""Learning rules by name. One module per rule; importing it registers it.

>>> from beyondbp.rules import available_rules, make_rule
>>> rule = make_rule("bp", {"lr": 1e-3, "optimizer": "adamw"})
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from beyondbp.errors import BeyondBPError, UnknownNameError, describe_validation
from beyondbp.rules.base import Rule, RuleOptions, SetupContext

_REGISTRY: dict[str, type[Rule]] = {}


def register(name: str, description: str) -> Callable[[type[Rule]], type[Rule]]:
    """Class decorator: register a :class:`Rule` subclass under ``name``."""

    def deco(cls: type[Rule]) -> type[Rule]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"rule {name!r} is registered twice")
        cls.name, cls.description = name, description
        _REGISTRY[name] = cls
        return cls

    return deco


def available_rules() -> dict[str, type[Rule]]:
    return dict(sorted(_REGISTRY.items()))


def get_rule(name: str) -> type[Rule]:
    if name not in _REGISTRY:
        raise UnknownNameError("rule", name, _REGISTRY)
    return _REGISTRY[name]


def parse_value(text: str) -> Any:
    """A ``--set key=value`` value: JSON if it parses (numbers, true, null, lists), else a string."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BeyondBPError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def make_options(rule_cls: type[Rule], options: Mapping[str, Any] | None) -> RuleOptions:
    """Validate options for a rule; unknown keys and bad values get errors naming the valid ones."""
    options = dict(options or {})
    valid = rule_cls.Options.model_fields
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise UnknownNameError("option", unknown[0], valid, where=f"rule {rule_cls.name!r}")
    try:
        return rule_cls.Options(**options)
    except ValidationError as e:
        problems = describe_validation(e)
        raise BeyondBPError(f"bad option for rule {rule_cls.name!r}: {problems}") from None


def make_rule(name: str, options: Mapping[str, Any] | None = None) -> Rule:
    cls = get_rule(name)
    return cls(make_options(cls, options))


# Importing the rule modules registers them.
from beyondbp.rules import bp as _bp  # noqa: E402, F401
from beyondbp.rules import cafo as _cafo  # noqa: E402, F401
from beyondbp.rules import convex_admm as _convex_admm  # noqa: E402, F401
from beyondbp.rules import convex_gated as _convex_gated  # noqa: E402, F401
from beyondbp.rules import convex_robust as _convex_robust  # noqa: E402, F401
from beyondbp.rules import convex_scp as _convex_scp  # noqa: E402, F401
from beyondbp.rules import de as _de  # noqa: E402, F401
from beyondbp.rules import deep_ga as _deep_ga  # noqa: E402, F401
from beyondbp.rules import dfa as _dfa  # noqa: E402, F401
from beyondbp.rules import drtp as _drtp  # noqa: E402, F401
from beyondbp.rules import es as _es  # noqa: E402, F401
from beyondbp.rules import ff as _ff  # noqa: E402, F401
from beyondbp.rules import mezo as _mezo  # noqa: E402, F401
from beyondbp.rules import mono_forward as _mono_forward  # noqa: E402, F401
from beyondbp.rules import noprop as _noprop  # noqa: E402, F401
from beyondbp.rules import tpsgd as _tpsgd  # noqa: E402, F401
from beyondbp.rules import zo_adam as _zo_adam  # noqa: E402, F401

__all__ = [
    "Rule",
    "RuleOptions",
    "SetupContext",
    "available_rules",
    "get_rule",
    "make_options",
    "make_rule",
    "parse_assignments",
    "register",
]
