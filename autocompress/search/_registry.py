"""The registry of strategies by name (the protocol itself is in ``_strategy``).

This module knows only what a registry needs of an entry, so that the settings can check a
``mode`` against it without depending on what a strategy runs on.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, TypeVar

from autocompress.errors import AutocompressError

# the packages whose import registers the built-in strategies: the joint ones, and the naive baselines of `compare`
BUILTIN_STRATEGIES = ("autocompress.strategies", "autocompress.compare")


class Registered(Protocol):
    """What the registry reads of a strategy: its name, and the rule it puts on the settings (if any)."""

    @property
    def name(self) -> str: ...

    def settings_problem(self, settings: Any) -> tuple[tuple[str, ...], str] | None: ...


Entry = TypeVar("Entry", bound=Registered)
STRATEGIES: dict[str, Registered] = {}


def register_strategy(strategy: Entry) -> Entry:
    """Add ``strategy`` to the registry (a name is taken once); returns it."""
    if strategy.name in STRATEGIES and type(STRATEGIES[strategy.name]) is not type(strategy):
        raise AutocompressError(f"a strategy named {strategy.name!r} is registered already")
    STRATEGIES[strategy.name] = strategy
    return strategy


def load_builtins() -> None:
    """Register the built-in strategies (importing their package registers them: plugin discovery)."""
    for package in BUILTIN_STRATEGIES:
        importlib.import_module(package)


def strategy_names() -> tuple[str, ...]:
    """The registered strategies' names: what ``search --mode`` and ``compare --strategies`` accept."""
    load_builtins()
    return tuple(STRATEGIES)


def registered(name: str) -> Registered:
    """The entry called ``name``."""
    load_builtins()
    if name not in STRATEGIES:
        raise AutocompressError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
