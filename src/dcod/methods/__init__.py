"""The method registry: one module per method in this package, each registered by existing.

Every module here (except ``base``) is imported when the package is, and its ``@register`` classes
become methods; nothing else lists method names. ``get_method(name)`` returns a class,
``resolve(experiment)`` the class and its checked ``Params``. The contract a method fulfils is in
``dcod.methods.base``.
"""

from __future__ import annotations

import importlib
import pkgutil

from dcod.config import ConfigError, ExperimentConfig, parse_section
from dcod.methods.base import REGISTRY, Cost, Method, Needs, Scores, StepContext, collate_for, register

__all__ = ["Cost", "Method", "Needs", "Scores", "StepContext", "build_method", "collate_for", "discover",
           "get_method", "method_names", "needs_of", "register", "resolve"]


def discover(package: str) -> list[str]:
    """Import every module of ``package`` (its ``@register`` decorators run); returns their names."""
    module = importlib.import_module(package)
    names = [info.name for info in pkgutil.iter_modules(module.__path__) if not info.name.startswith("_")]
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


def method_names() -> list[str]:
    return sorted(REGISTRY)


def get_method(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(method_names())}")
    return REGISTRY[name]


def resolve(experiment: ExperimentConfig) -> tuple[type[Method], object]:
    """The experiment's method class and its parameters checked by the method's ``Params`` model; errors
    name the experiment's file and the key (``method``, ``params.<knob>``)."""
    if experiment.method not in REGISTRY:
        raise ConfigError(f"{experiment.source}: method: got {experiment.method!r}, allowed values: "
                          f"{', '.join(method_names())}")
    cls = REGISTRY[experiment.method]
    return cls, parse_section(cls.Params, experiment.params, experiment.source, "params")


def build_method(name: str, params, ctx: StepContext, cost: Cost) -> Method:
    """The method ``name`` with ``params`` (None: its defaults), for code that trains one without an
    experiment file (tests, benchmarks)."""
    cls = get_method(name)
    return cls(cls.Params() if params is None else params, ctx, cost)


def needs_of(experiment: ExperimentConfig) -> Needs:
    """What the experiment's method needs with its parameters (checked on the way)."""
    cls, params = resolve(experiment)
    return cls.needs(params)


discover(__name__)
