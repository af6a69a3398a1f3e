"""The per-layer search: space, budget fitting, Optuna study, the whole run."""

from __future__ import annotations

from autocompress.search._budget import (
    BudgetCheck,
    TargetUnreachableError,
    best_uniform_plan,
    check_target,
    fit_to_budget,
    relative_distortion,
    sensitivity_plan,
)
from autocompress.search._compare import STRATEGIES, CompareSettings, MeasureSettings, compare
from autocompress.search._run import SearchOutcome, run_search
from autocompress.search._settings import PRUNERS, SAMPLERS, SearchSettings, load_settings
from autocompress.search._space import SearchSpace
from autocompress.search._storage import HeartbeatJournalStorage, local_storage_file, open_storage
from autocompress.search._study import (
    METRIC_NAMES,
    SearchContext,
    best_feasible_trial,
    constraint_of,
    make_pruner,
    make_sampler,
    open_study,
    plan_from_attrs,
)

__all__ = [
    "METRIC_NAMES",
    "PRUNERS",
    "SAMPLERS",
    "BudgetCheck",
    "CompareSettings",
    "HeartbeatJournalStorage",
    "MeasureSettings",
    "STRATEGIES",
    "SearchContext",
    "SearchOutcome",
    "SearchSettings",
    "SearchSpace",
    "TargetUnreachableError",
    "best_feasible_trial",
    "best_uniform_plan",
    "check_target",
    "compare",
    "constraint_of",
    "fit_to_budget",
    "load_settings",
    "make_pruner",
    "make_sampler",
    "local_storage_file",
    "open_storage",
    "open_study",
    "plan_from_attrs",
    "relative_distortion",
    "run_search",
    "sensitivity_plan",
]
