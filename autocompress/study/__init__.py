"""The Optuna side of a search: the study every strategy records into (with its storages, heartbeats and
workers' claims), the trial records and study facts it holds, the samplers and pruners by name, and the
loop that runs trials so that Ctrl-C keeps every finished one.
"""

from __future__ import annotations

from autocompress.study._interrupt import InterruptGuard
from autocompress.study._records import StudyFacts, TrialRecord
from autocompress.study._samplers import pruner_names, sampler_names
from autocompress.study._storage import dashboard_argument, local_storage_file, open_storage, redact
from autocompress.study._study import (
    FINETUNE_SUFFIX,
    WARM_START_ATTR,
    best_feasible_trial,
    claim_slot,
    completed_trial,
    failed_if_left_running,
    finished_trials,
    interruptible,
    open_study,
    optimize,
    ranked_feasible_trials,
    record_study_facts,
    run_one_trial,
    trial_counts,
)
from autocompress.study._workers import WorkerEntry, local_workers

__all__ = [
    "FINETUNE_SUFFIX",
    "WARM_START_ATTR",
    "InterruptGuard",
    "StudyFacts",
    "TrialRecord",
    "WorkerEntry",
    "best_feasible_trial",
    "claim_slot",
    "completed_trial",
    "dashboard_argument",
    "failed_if_left_running",
    "finished_trials",
    "interruptible",
    "local_storage_file",
    "local_workers",
    "open_storage",
    "open_study",
    "optimize",
    "pruner_names",
    "ranked_feasible_trials",
    "record_study_facts",
    "redact",
    "run_one_trial",
    "sampler_names",
    "trial_counts",
]
