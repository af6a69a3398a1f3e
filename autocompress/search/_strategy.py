"""The Strategy protocol: one way of choosing a plan (the strategies and their registry are in
:mod:`autocompress.strategies`).

A strategy receives a :class:`~autocompress.search.SearchContext` (the settings, the baseline, the
data, the space, the exact size accountant, the opened study) and returns a
:class:`~autocompress.search.SearchOutcome`. Whatever it does inside (Optuna trials, ADMM training,
a single allocation), it must:

* record every candidate it measures as a trial of ``context.study`` with a
  :class:`~autocompress.search.TrialRecord` (so ``report``, the Pareto files and the dashboard show it);
* write ``best.yaml`` and ``best.acz`` (at most the target) with
  :func:`~autocompress.search.write_best` unless it runs as a worker (``settings.worker``);
* call ``context.interrupt.check`` often (every training step does), so Ctrl-C stops it with every
  finished trial kept, and leave a rerun of the same command to resume.

``budget_settings`` says how the strategy spends a training budget of ``epochs`` in ``autocompress
compare``. A new strategy is one module of :mod:`autocompress.strategies` that subclasses :class:`Strategy`,
and one line of that package's ``__init__`` that registers it; ``search --mode`` (where ``offered_by_search``)
and ``compare --strategies`` find it by name.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from autocompress.search._context import SearchContext
    from autocompress.search._outcome import SearchOutcome
    from autocompress.settings import SearchSettings

class Strategy(ABC):
    """One way of choosing a per-layer plan under the exact byte budget."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line: what it does (help texts, compare.md)
    hyperparameters: ClassVar[tuple[str, ...]]  # what a user of it must choose besides the model (compare's count)
    training_phase: ClassVar[str | None] = None  # the setting holding the epochs of a phase before the hard fine-tune
    scopes: ClassVar[tuple[str, ...]] = ()  # the groups of settings it reads besides the common ones (``SCOPES``)
    offered_by_search: ClassVar[bool] = True  # ``search --mode`` runs it; False: a baseline of ``compare`` only
    sweeps_targets: ClassVar[bool] = False  # reads ``targets``: one run per target of a sweep
    runs_side_by_side: ClassVar[bool] = False  # its trials can run in worker processes (``n_jobs``, ``worker``)

    @abstractmethod
    def run(self, context: SearchContext) -> SearchOutcome:
        """Choose a plan, record what was measured in ``context.study`` and write the best files."""

    def prepare(self, settings: SearchSettings) -> SearchSettings:
        """The settings this strategy runs under (saved as ``run.yaml``); by default the given ones."""
        return settings

    def settings_problem(self, settings: SearchSettings) -> tuple[tuple[str, ...], str] | None:
        """A rule this strategy puts on the settings: (the fields it concerns, what is wrong), or None."""
        return None

    def describe(self, settings: SearchSettings) -> str:
        """One line for the start of a run: what this strategy will do with these settings."""
        return f"{self.name}: {self.summary}; final fine-tune {settings.final_epochs:g} epoch(s)"

    def budget_settings(self, settings: SearchSettings, *, epochs: float, trials: int) -> SearchSettings:
        """The settings under which this strategy spends ``epochs`` of fine-tuning in all (``compare``).
        A strategy with a training phase before its hard fine-tune (``training_phase``, the setting of its
        epochs) gets half for each; otherwise all of it goes to the final fine-tune of the one plan it chooses."""
        if self.training_phase is not None:
            phase: dict[str, Any] = {self.training_phase: epochs / 2}
            return dataclasses.replace(settings, **phase, final_epochs=epochs / 2)
        return dataclasses.replace(settings, final_epochs=epochs)

