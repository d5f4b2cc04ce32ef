"""Learning rules by name. One module per rule; the registry finds them through entry points
(:mod:`beyondbp.rules.registry`).

>>> from beyondbp.rules import available_rules, make_rule
>>> rule = make_rule("bp", {"lr": 1e-3, "optimizer": "adamw"})
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from beyondbp.errors import BeyondBPError, UnknownNameError, describe_validation
from beyondbp.rules.base import Rule, RuleOptions, SetupContext
from beyondbp.rules.registry import available_rules, get_rule, register


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
