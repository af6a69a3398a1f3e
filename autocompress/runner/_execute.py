"""One run of one strategy: the shared preparation, the study, then the strategy's own work.

Every way of running a search goes through :func:`execute`: the ``search`` command (through
``autocompress.runner.run_search``, which adds the report files), each ``compare`` strategy, and every
worker process (:func:`execute_worker`, which ``--n-jobs`` spawns).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import optuna
import torch

from autocompress.errors import AutocompressError
from autocompress.search import JobClock, Log, SearchContext, SearchOutcome, baseline_accuracy, prepare_context, write_trivial_result
from autocompress.settings import SearchSettings
from autocompress.strategies import changed_kept_settings, check_settings, get_strategy, objective_of, reads
from autocompress.study import StudyFacts, dashboard_argument, finished_trials, open_study, record_study_facts, redact


def execute(settings: SearchSettings, *, log: Log = print, known_accuracy: dict[str, float] | None = None) -> SearchOutcome:
    """Run (or resume) the strategy ``settings.mode`` names; its files go to ``settings.study_dir``.
    ``known_accuracy`` is the baseline's val/test accuracy when the caller measured it already."""
    clock = JobClock.start(settings.time_budget_seconds) if settings.time_budget_seconds is not None else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar and summary say what matters
    check_settings(settings)
    strategy = get_strategy(settings.mode)
    settings = strategy.prepare(settings)
    # refuses an unreachable target before any data or training
    context = prepare_context(settings, log=log, clock=clock, kl_scored=reads(settings, "kl"))
    context.worker_entry = execute_worker
    if len(context.budgets) == 1 and context.budgets[0].trivial:
        settings.save(settings.study_dir / "run.yaml")
        return write_trivial_result(context, context.budgets[0].uncompressed_bytes)
    with context.interrupt:
        context.study, context.study_created = open_study(settings, objective_of(settings))
        refuse_other_settings(context.study, settings)
        settings.save(settings.study_dir / "run.yaml")
        introduce(context, strategy.describe(settings), known_accuracy)
        return strategy.run(context)


def refuse_other_settings(study: optuna.Study, settings: SearchSettings) -> None:
    """A study resumed (or joined) under settings that change what it is, such as another target, is refused
    before anything is written: its trials were measured under the settings it recorded."""
    recorded = StudyFacts.of(study).settings
    if not recorded:
        return
    changed = changed_kept_settings(settings, recorded)
    if changed:
        shown = ", ".join(f"{name} {recorded[name]!r} (now {getattr(settings, name)!r})" for name in changed)
        raise AutocompressError(
            f"study {settings.resolved_study_name!r} was made with {shown}; rerun it with its own settings to resume it, "
            f"or give --study-name a new name to start another study")


def introduce(context: SearchContext, plan_of_work: str, known_accuracy: dict[str, float] | None = None) -> None:
    """Say what this run does and where to watch it; measure the baseline once per study."""
    settings, study = context.settings, context.opened_study
    context.log(f"study {settings.resolved_study_name} ({redact(settings.resolved_storage)}): "
                f"{len(finished_trials(study))} finished trial(s); {plan_of_work}; on {context.device}")
    context.log(f"watch it live: optuna-dashboard {dashboard_argument(redact(settings.resolved_storage))}")
    if StudyFacts.of(study).baseline_accuracy is None:
        accuracy = known_accuracy or baseline_accuracy(context.baseline, context.splits, context.device)
        record_study_facts(study, settings, accuracy)
        context.log(f"baseline: val top-1 {accuracy['val']:.2%}, test top-1 {accuracy['test']:.2%}")


def execute_worker(settings_fields: dict[str, Any], threads: int, log_path: str) -> None:
    """Entry point of a worker process spawned by ``--n-jobs``: its output goes to ``log_path``."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the leading process only, which passes it on once
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as stream:
        os.dup2(stream.fileno(), sys.stdout.fileno())
        os.dup2(stream.fileno(), sys.stderr.fileno())
        torch.set_num_threads(threads)
        try:
            execute(SearchSettings(**settings_fields))
        except KeyboardInterrupt:
            print("interrupted: finished trials are saved in the study", flush=True)
            sys.exit(130)
