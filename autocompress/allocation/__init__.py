"""How a byte budget is shared among the layers, without a study: the budget check and its fitting, the
per-layer space, the projection onto the exact budget (and its coefficients), and the cheap KL score of a
plan. Imports no Optuna: a sampler's trial reaches it through :class:`Suggests`.
"""

from __future__ import annotations

from autocompress.allocation._budget import (
    BudgetCheck,
    TargetUnreachableError,
    best_uniform_plan,
    check_target,
    fit_to_budget,
    relative_distortion,
    sensitivity_plan,
)
from autocompress.allocation._coefficients import CoefficientSpace, layer_groups
from autocompress.allocation._projection import Projection, Projector, plan_distortion, project_to_budget
from autocompress.allocation._score import PlanScore, PlanScorer, ScoreSettings, compress_weights_
from autocompress.allocation._space import SearchSpace, space_problem
from autocompress.allocation._suggest import Suggests

__all__ = [
    "BudgetCheck",
    "CoefficientSpace",
    "PlanScore",
    "PlanScorer",
    "Projection",
    "Projector",
    "ScoreSettings",
    "SearchSpace",
    "Suggests",
    "TargetUnreachableError",
    "best_uniform_plan",
    "check_target",
    "compress_weights_",
    "fit_to_budget",
    "layer_groups",
    "plan_distortion",
    "project_to_budget",
    "relative_distortion",
    "sensitivity_plan",
    "space_problem",
]
