"""What the allocation needs of a sampler's trial: the three ``suggest_*`` calls of ``optuna.Trial``.

A protocol, so that the allocation algorithms run without Optuna (any object with these methods will do,
such as a fixed-parameter trial in a test or another optimiser's adapter)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Suggests(Protocol):
    """A trial that suggests parameter values by name (``optuna.Trial`` is one)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...
