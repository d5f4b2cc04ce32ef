"""The one registry of learning rules, filled from the ``beyondbp.rules`` entry-point group.

Every rule, the package's own included, is found the same way: an installed distribution names
the module (or class) in its entry points, and importing it runs ``@register``. So a rule written
outside this tree is seen wherever beyondbp runs: in ``train``, in a grid's worker processes, in
``tune`` and in Ray tasks (each a fresh process that discovers the same entry points)::

    # pyproject.toml of a package of your own
    [project.entry-points."beyondbp.rules"]
    my-rule = "my_package.my_rule"        # a module whose class is decorated with @register

Discovery is lazy: the rule modules are imported the first time a rule is looked up, so
``import beyondbp`` stays cheap.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from beyondbp.errors import UnknownNameError

if TYPE_CHECKING:
    from beyondbp.rules.base import Rule

GROUP = "beyondbp.rules"
_REGISTRY: dict[str, type[Rule]] = {}
_loaded: set[str] = set()  # entry points already imported (by their value)


def register(name: str, description: str) -> Callable[[type[Rule]], type[Rule]]:
    """Class decorator: register a :class:`~beyondbp.rules.base.Rule` subclass under ``name``."""

    def deco(cls: type[Rule]) -> type[Rule]:
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise ValueError(f"rule {name!r} is registered twice")
        cls.name, cls.description = name, description
        _REGISTRY[name] = cls
        return cls

    return deco


def discover() -> None:
    """Import every rule named in the ``beyondbp.rules`` entry points not imported yet.

    A plugin that fails to import is skipped with a warning naming it, so one broken package
    does not take the other rules down."""
    for ep in entry_points(group=GROUP):
        if ep.value in _loaded:
            continue
        _loaded.add(ep.value)
        try:
            module, _, attr = ep.value.partition(":")
            obj = importlib.import_module(module)
            for part in filter(None, attr.split(".")):
                obj = getattr(obj, part)
        except Exception as e:
            warnings.warn(
                f"rule plugin {ep.name!r} ({ep.value}) failed to import and is skipped: "
                f"{type(e).__name__}: {e}",
                stacklevel=2,
            )
            continue
        if isinstance(obj, type) and ep.name not in _REGISTRY:  # a class without @register
            register(ep.name, (obj.__doc__ or "").strip().split("\n")[0])(obj)


def available_rules() -> dict[str, type[Rule]]:
    """Every registered rule by name, sorted."""
    discover()
    return dict(sorted(_REGISTRY.items()))


def get_rule(name: str) -> type[Rule]:
    if name not in _REGISTRY:
        discover()
    if name not in _REGISTRY:
        raise UnknownNameError("rule", name, _REGISTRY)
    return _REGISTRY[name]
