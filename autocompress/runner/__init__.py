"""A whole search, as ``autocompress search`` runs it: the strategy's run, then the report files.

settings -> baseline -> target check -> study -> the strategy (``--mode``) -> best.yaml and best.acz
-> trials.csv, pareto.csv/png/html (and front.csv/png with ``--front``) and a summary in the terminal.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import optuna

from autocompress.report import summary_table, trials_frame, write_front_report, write_study_report
from autocompress.runner._execute import execute, execute_worker
from autocompress.search import Log, SearchOutcome
from autocompress.settings import SearchSettings
from autocompress.settings import load_settings as load_unchecked
from autocompress.strategies import FRONT_SUFFIX, check_settings
from autocompress.study import FINETUNE_SUFFIX, StudyFacts, open_storage
from autocompress.units import format_size

__all__ = ["execute", "execute_worker", "load_settings", "report_study", "run_search"]


def load_settings(preset: Path | str | None, flags: dict[str, Any], assignments: dict[str, str] | None = None) -> SearchSettings:
    """The settings of a search as ``autocompress search`` reads them: a preset, ``--set`` assignments and flags
    (:func:`autocompress.settings.load_settings`), checked against the registries too
    (:func:`autocompress.strategies.check_settings`), every problem one error naming where the value came from."""
    return load_unchecked(preset, flags, assignments, check=functools.partial(check_settings, search=True))


def run_search(settings: SearchSettings, *, log: Log = print) -> SearchOutcome:
    """Run (or resume) the search ``settings`` describe and write its files into ``settings.study_dir``."""
    outcome = execute(settings, log=log)
    if settings.worker or outcome.trivial:
        return outcome  # a worker leaves the report to the leading process; a trivial target has no study
    report_study(settings.resolved_storage, settings.resolved_study_name, settings.study_dir, log=log)
    if outcome.best_plan is not None and outcome.best_plan.result.get("accuracy"):
        result = outcome.best_plan.result
        baseline = result.get("baseline_accuracy", {}).get("test", float("nan"))
        log(f"best.acz: {format_size(result['packed_bytes'])} (target {format_size(settings.target_bytes)}), "
            f"test top-1 {result['accuracy']['test']:.2%} (baseline {baseline:.2%}); files in {settings.study_dir}")
    return outcome


def report_study(url: str, name: str, folder: Path, *, log: Log = print) -> dict[str, Path]:
    """Write a study's report files from its storage (with its companion and front studies, where they exist)
    and log its summary; returns the paths written."""
    storage = open_storage(url, heartbeat_seconds=None)
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
    study = optuna.load_study(study_name=name, storage=storage)
    companions = [optuna.load_study(study_name=name + FINETUNE_SUFFIX, storage=storage)] if name + FINETUNE_SUFFIX in names else []
    paths = write_study_report(study, folder, *companions)
    facts = StudyFacts.of(study)
    frame = trials_frame(study, *companions)
    at_target = frame[frame["fidelity"] != "front"] if "fidelity" in frame else frame  # front points have budgets of their own
    log(summary_table(at_target, facts.target_bytes, facts.baseline_accuracy))
    if name + FRONT_SUFFIX in names:
        front = optuna.load_study(study_name=name + FRONT_SUFFIX, storage=storage)
        others = [optuna.load_study(study_name=other, storage=storage) for other in names
                  if other not in (name, name + FRONT_SUFFIX, name + FINETUNE_SUFFIX)]
        paths.update(write_front_report(front, study, [*companions, *others], folder, target_bytes=facts.target_bytes,
                                        baseline_accuracy=facts.baseline_accuracy))
    return paths
