"""One search run as every strategy sees it: the context (settings, baseline, data, space, exact sizes, the
opened study, the clock of ``--time``), the trials' shared steps (measure a plan, fine-tune it under the
budget), the outcome and its files, and the :class:`Strategy` protocol.

The settings are :mod:`autocompress.settings`, the allocation algorithms :mod:`autocompress.allocation`, the
Optuna machinery :mod:`autocompress.study`; the strategies themselves and their registry are
:mod:`autocompress.strategies`; a whole run with its report files is :func:`autocompress.runner.run_search`.
"""

from __future__ import annotations

from autocompress.search._clock import JobClock
from autocompress.search._context import (
    Log,
    SearchContext,
    baseline_accuracy,
    baseline_cache,
    prepare_baseline,
    prepare_context,
    space_for,
)
from autocompress.search._outcome import (
    SearchOutcome,
    finished_final,
    outcome_of,
    restate_choice,
    write_best,
    write_best_so_far,
    write_trivial_result,
)
from autocompress.search._strategy import Strategy
from autocompress.search._trials import (
    final_distillation,
    finetune_plan,
    finetune_state_path,
    measure_within_budget,
    plan_trial,
    worker_name,
)

__all__ = [
    "JobClock",
    "Log",
    "SearchContext",
    "SearchOutcome",
    "Strategy",
    "baseline_accuracy",
    "baseline_cache",
    "final_distillation",
    "finetune_plan",
    "finetune_state_path",
    "finished_final",
    "measure_within_budget",
    "outcome_of",
    "plan_trial",
    "prepare_baseline",
    "prepare_context",
    "restate_choice",
    "space_for",
    "worker_name",
    "write_best",
    "write_best_so_far",
    "write_trivial_result",
]
