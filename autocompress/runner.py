"""A whole search, as ``autocompress search`` runs it: the strategy's run, then the report files.

settings -> baseline -> target check -> study -> the strategy (``--mode``) -> best.yaml and best.acz
-> trials.csv, pareto.csv/png/html (and front.csv/png with ``--front``) and a summary in the terminal.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from autocompress.report import summary_table, trials_frame, write_front_report, write_study_report
from autocompress.search import FINETUNE_SUFFIX, SearchOutcome, SearchSettings, StudyFacts, execute, open_storage
from autocompress.search._context import Log
from autocompress.strategies import FRONT_SUFFIX
from autocompress.units import format_size


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
