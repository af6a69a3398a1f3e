"""What every search strategy shares: settings, the space, budget fitting and the projection, the
Optuna study with its storages and workers, trial records, and the Strategy protocol with its registry.

The strategies themselves live in :mod:`autocompress.strategies`; a whole run with its report files is
:func:`autocompress.runner.run_search`.
"""

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
from autocompress.search._coefficients import CoefficientSpace, layer_groups
from autocompress.search._context import (
    SearchContext,
    baseline_accuracy,
    baseline_cache,
    prepare_baseline,
    prepare_context,
    space_for,
)
from autocompress.search._execute import execute
from autocompress.search._outcome import (
    SearchOutcome,
    finished_final,
    outcome_of,
    restate_choice,
    write_best,
    write_best_so_far,
)
from autocompress.search._projection import Projection, Projector, plan_distortion, project_to_budget
from autocompress.search._records import CONSTRAINT_NAME, StudyFacts, TrialRecord, constraint_of
from autocompress.search._registry import STRATEGIES, register_strategy, strategy_names
from autocompress.search._samplers import PRUNERS, SAMPLERS, make_pruner, make_sampler
from autocompress.search._score import TRIAL_SCORES, PlanScore, PlanScorer, ScoreSettings, TrialObjective
from autocompress.search._settings import SETTING_OPTIONS, SearchSettings, kl_scored, load_settings, read_preset
from autocompress.search._space import SPACES, SearchSpace
from autocompress.search._storage import HeartbeatJournalStorage, dashboard_argument, local_storage_file, open_storage, redact
from autocompress.search._strategy import Strategy, get_strategy
from autocompress.search._study import (
    FINETUNE_SUFFIX,
    METRIC_NAMES,
    WARM_START_ATTR,
    best_feasible_trial,
    claim_slot,
    completed_trial,
    finished_trials,
    open_study,
    optimize,
    ranked_feasible_trials,
    run_one_trial,
)
from autocompress.search._trials import (
    baseline_distillation,
    final_distillation,
    finetune_plan,
    finetune_state_path,
    measure_within_budget,
    plan_trial,
    worker_name,
)
from autocompress.search._workers import local_workers
from autocompress.search.options import Option, SettingError, options_of

__all__ = [
    "CONSTRAINT_NAME",
    "FINETUNE_SUFFIX",
    "METRIC_NAMES",
    "PRUNERS",
    "SAMPLERS",
    "SETTING_OPTIONS",
    "SPACES",
    "STRATEGIES",
    "TRIAL_SCORES",
    "WARM_START_ATTR",
    "BudgetCheck",
    "CoefficientSpace",
    "HeartbeatJournalStorage",
    "Option",
    "PlanScore",
    "PlanScorer",
    "Projection",
    "Projector",
    "ScoreSettings",
    "SearchContext",
    "SearchOutcome",
    "SearchSettings",
    "SearchSpace",
    "SettingError",
    "Strategy",
    "StudyFacts",
    "TargetUnreachableError",
    "TrialObjective",
    "TrialRecord",
    "baseline_accuracy",
    "baseline_cache",
    "baseline_distillation",
    "best_feasible_trial",
    "best_uniform_plan",
    "check_target",
    "claim_slot",
    "completed_trial",
    "constraint_of",
    "dashboard_argument",
    "execute",
    "final_distillation",
    "finetune_plan",
    "finetune_state_path",
    "finished_final",
    "finished_trials",
    "fit_to_budget",
    "get_strategy",
    "kl_scored",
    "layer_groups",
    "load_settings",
    "local_storage_file",
    "local_workers",
    "make_pruner",
    "make_sampler",
    "measure_within_budget",
    "open_storage",
    "open_study",
    "optimize",
    "options_of",
    "outcome_of",
    "plan_distortion",
    "plan_trial",
    "prepare_baseline",
    "prepare_context",
    "project_to_budget",
    "ranked_feasible_trials",
    "read_preset",
    "redact",
    "register_strategy",
    "relative_distortion",
    "restate_choice",
    "run_one_trial",
    "sensitivity_plan",
    "space_for",
    "strategy_names",
    "worker_name",
    "write_best",
    "write_best_so_far",
]
