"""The strategies by name. The built-in ones are registered by this package's ``__init__``, one line each; a
strategy of your own is registered with :func:`register_strategy`, and ``search --mode`` and ``compare
--strategies`` then accept its name."""

from __future__ import annotations

from typing import TypeVar

from autocompress.errors import AutocompressError
from autocompress.search import Strategy

Entry = TypeVar("Entry", bound=Strategy)
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Entry) -> Entry:
    """Add ``strategy`` to the registry (a name is taken once); returns it."""
    if strategy.name in STRATEGIES and type(STRATEGIES[strategy.name]) is not type(strategy):
        raise AutocompressError(f"a strategy named {strategy.name!r} is registered already")
    STRATEGIES[strategy.name] = strategy
    return strategy


def strategy_names(*, searchable: bool = False) -> tuple[str, ...]:
    """The registered strategies' names (``compare --strategies``); ``searchable``: those ``search --mode`` offers."""
    return tuple(name for name, strategy in STRATEGIES.items() if strategy.offered_by_search or not searchable)


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``."""
    if name not in STRATEGIES:
        raise AutocompressError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
