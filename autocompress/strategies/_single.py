"""Strategies that choose one plan without trials: the best uniform allocation, and the projection."""

from __future__ import annotations

from dataclasses import replace

from autocompress.allocation import best_uniform_plan, project_to_budget
from autocompress.errors import AutocompressError
from autocompress.plan import Plan
from autocompress.search import SearchContext, SearchOutcome, Strategy, plan_trial
from autocompress.units import format_size


def uniform_plan(context: SearchContext) -> Plan:
    """The best uniform allocation of the context's space and target, or a clear error when none fits."""
    plan = best_uniform_plan(context.sizes, replace(context.space, anchor=None), context.target_bytes)
    if plan is None:
        raise AutocompressError(f"no uniform plan fits {format_size(context.target_bytes)} within the bounds; "
                                "raise --max-sparsity or lower --min-bits")
    plan.model = context.model_spec
    return plan


def projection_plan(context: SearchContext) -> Plan | None:
    """The allocation of least weight distortion within the exact budget: the ADMM mode's projection
    (two alternating knapsacks) of the baseline's own weights, seeded with the best uniform plan.
    No training; about 2 s for ResNet-20. None when no uniform plan fits."""
    space = replace(context.space, anchor=None)
    uniform = best_uniform_plan(context.sizes, space, context.target_bytes)
    if uniform is None:
        return None
    projected = project_to_budget(context.sizes, space, context.target_bytes, seed=uniform)
    if projected is None:
        return None
    projected.plan.model = context.model_spec
    return projected.plan


class UniformStrategy(Strategy):
    name = "uniform"
    summary = "one sparsity and one bit-width for every layer (the best that fits), then in-parallel pruning-quantization"
    hyperparameters = ("target size", "fine-tuning epochs", "learning rate")

    def run(self, context: SearchContext) -> SearchOutcome:
        plan = uniform_plan(context)
        setting = next(iter(plan.layers.values()))
        context.log(f"plan: every layer at sparsity {setting.sparsity:.3f} and {setting.bits} bits")
        return plan_trial(context, plan, strategy=self.name)


class ProjectionStrategy(Strategy):
    name = "projection"
    summary = ("the allocation of least weight distortion within the exact budget (the ADMM projection of the "
               "baseline's weights, no training), then in-parallel pruning-quantization")
    hyperparameters = ("target size", "fine-tuning epochs", "learning rate", "max sparsity", "min bits", "max bits")

    def run(self, context: SearchContext) -> SearchOutcome:
        plan = projection_plan(context) or uniform_plan(context)
        bits = [setting.bits for setting in plan.layers.values()]
        sparsity = [setting.sparsity for setting in plan.layers.values()]
        context.log(f"plan: sparsity {min(sparsity):.2f}-{max(sparsity):.2f}, bits {min(bits)}-{max(bits)}")
        return plan_trial(context, plan, strategy=self.name)
