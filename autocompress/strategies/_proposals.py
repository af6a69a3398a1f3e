"""How a BO trial proposes a plan on the budget, one entry per search space (``--space``).

* ``absolute``: a sparsity and a bit-width per layer, moved onto the budget when over it
  (``fit_to_budget``); warm starts: the best uniform plan, the projection, the sensitivity plan.
* ``relative``: per-layer shifts around the projection plan, moved onto the budget likewise.
* ``coefficients``: one sensitivity coefficient per group of layers; the projection weighted by them is
  the plan, exactly on the budget (no repair). The all-ones point is the projection, the warm start.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import optuna
import torch
from torch import nn

from autocompress.allocation import CoefficientSpace, Projector, best_uniform_plan, fit_to_budget, sensitivity_plan
from autocompress.engine import evaluate
from autocompress.plan import Plan
from autocompress.search import SearchContext
from autocompress.strategies._single import projection_plan, uniform_plan

SENSITIVITY_IMAGES = 1000  # validation images behind the sensitivity warm start

WarmStart = tuple[str, dict[str, Any]]  # (the strategy name recorded with the trial, its parameters)


class Proposer(ABC):
    """Turns a trial's parameters into a plan that fits the target."""

    @abstractmethod
    def propose(self, trial: optuna.Trial) -> tuple[Plan | None, bool]:
        """The trial's plan on the budget (None if nothing fits) and whether it had to be moved there."""

    @abstractmethod
    def warm_starts(self) -> list[WarmStart]:
        """The points every study of this space starts from."""

    def suggest_only(self, trial: optuna.Trial) -> None:
        """Suggest the trial's parameters without building its plan (a fine-tune of a known plan shows them)."""
        self.propose(trial)


class PlanSpaceProposer(Proposer):
    """The absolute space, or the relative one around the projection plan (``context.space``)."""

    def __init__(self, context: SearchContext) -> None:
        self.context = context

    def propose(self, trial: optuna.Trial) -> tuple[Plan | None, bool]:
        context = self.context
        proposal = context.space.suggest(trial, model=context.model_spec)
        plan = fit_to_budget(context.sizes, proposal, context.space, context.target_bytes)
        return plan, plan is not proposal

    def suggest_only(self, trial: optuna.Trial) -> None:
        self.context.space.suggest(trial, model=self.context.model_spec)

    def warm_starts(self) -> list[WarmStart]:
        space = self.context.space
        return [(name, space.params_of(plan)) for name, plan in warm_start_plans(self.context) if space.represents(plan)]


class CoefficientProposer(Proposer):
    """Per-group coefficients, projected onto the exact budget."""

    def __init__(self, context: SearchContext) -> None:
        settings = context.settings
        self.context = context
        bounds = dataclasses.replace(context.space, anchor=None)
        self.space = CoefficientSpace.build(bounds, Projector(context.sizes, bounds), uniform_plan(context),
                                            coefficient_range=settings.coefficient_range)

    def propose(self, trial: optuna.Trial) -> tuple[Plan | None, bool]:
        coefficients = self.space.suggest(trial)
        return self.space.plan_for(coefficients, self.context.target_bytes, model=self.context.model_spec), False

    def suggest_only(self, trial: optuna.Trial) -> None:
        self.space.suggest(trial)

    def warm_starts(self) -> list[WarmStart]:
        return [("projection-warmstart", self.space.ones())]


def use_relative_space(context: SearchContext) -> None:
    """``--space relative``: search shifts around the projection plan (the best uniform plan where there is
    no projection). The anchor is a function of the baseline, the bounds and the target, so a resumed
    study gets the same one."""
    anchor = projection_plan(context) or best_uniform_plan(context.sizes, context.space, context.target_bytes)
    if anchor is None:
        context.log("relative space: no uniform plan fits the target, so the search uses absolute values")
        return
    context.space = context.space.around(anchor)
    head = next(iter(anchor.layers.values()))
    context.log(f"relative space: shifts of +-{context.space.sparsity_shift:g} sparsity and +-{context.space.bits_shift} "
                f"bits around the projection warm start (first layer: sparsity {head.sparsity:.3f}, {head.bits} bits)")


def _relative(context: SearchContext) -> Proposer:
    use_relative_space(context)
    return PlanSpaceProposer(context)


PROPOSERS: dict[str, Callable[[SearchContext], Proposer]] = {
    "absolute": PlanSpaceProposer,
    "relative": _relative,
    "coefficients": CoefficientProposer,
}


def proposer_for(context: SearchContext) -> Proposer:
    """The proposer of ``settings.space`` (every name of ``SPACES`` has one)."""
    return PROPOSERS[context.settings.space](context)


def warm_start_plans(context: SearchContext) -> list[tuple[str, Plan]]:
    """The plans every study of the plan spaces starts with, by strategy name: the best uniform
    allocation, the distortion-minimising projection and a sensitivity-guided allocation (each when it exists)."""
    space = dataclasses.replace(context.space, anchor=None)
    uniform = best_uniform_plan(context.sizes, space, context.target_bytes)
    if uniform is None:
        return []
    plans = [("uniform-warmstart", uniform)]
    projected = projection_plan(context)
    if projected is not None:
        plans.append(("projection-warmstart", projected))
    subset = context.splits.val.subset(torch.arange(min(SENSITIVITY_IMAGES, len(context.splits.val))))

    def score(candidate: nn.Module) -> float:
        return evaluate(candidate, subset, device=context.device)

    guided = sensitivity_plan(context.sizes, space, context.target_bytes, uniform, score)
    if guided is not None:
        plans.append(("sensitivity-warmstart", guided))
    return plans
