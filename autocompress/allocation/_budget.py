"""Fitting plans to a byte budget: repair, the smallest reachable size, uniform and sensitivity allocations."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.allocation._space import SearchSpace
from autocompress.compress import compressible_layers, dequantize, quantize
from autocompress.errors import AutocompressError
from autocompress.pack import SizeAccountant
from autocompress.plan import LayerSetting, Plan
from autocompress.units import format_size

_BISECTION_STEPS = 14
_FIT_STEPS = 20
_FIT_RESOLUTION = 2.0 / 2**14
FIT_SLACK = 0.001  # a repaired plan may leave this share of the target unused


class TargetUnreachableError(AutocompressError):
    """The target is below the smallest plan the search space allows."""


@dataclass(frozen=True)
class BudgetCheck:
    """Where a target stands: the smallest reachable size and the size with nothing compressed."""

    target_bytes: int
    smallest_bytes: int
    uncompressed_bytes: int

    @property
    def trivial(self) -> bool:
        """The target needs no compression at all."""
        return self.target_bytes >= self.uncompressed_bytes


def check_target(sizes: SizeAccountant, space: SearchSpace, target_bytes: int) -> BudgetCheck:
    """Refuse a target the space cannot reach, before any training."""
    smallest = min(sizes.total(plan) for plan in space.smallest_plans())
    uncompressed = sizes.total(Plan(layers={}))
    if target_bytes < smallest:
        raise TargetUnreachableError(
            f"target {format_size(target_bytes)} is below the smallest plan this search space allows, "
            f"{format_size(smallest)} (every layer at sparsity {space.sparsity_max} and {space.bits_min} bits); "
            f"raise the target to at least {smallest:,} bytes or widen the space (--max-sparsity, --min-bits)"
        )
    return BudgetCheck(target_bytes, smallest, uncompressed)


def fit_to_budget(sizes: SizeAccountant, plan: Plan, space: SearchSpace, target_bytes: int) -> Plan | None:
    """The plan itself if it fits; else the least change toward the smallest plan that fits; None if none does.

    The path from ``plan`` to the smallest plan moves every layer's sparsity
    toward the maximum first (t in [0, 1]), then its bits toward the minimum
    (t in [1, 2]). The size falls monotonically along it, and the smallest
    fitting t is bracketed and found on exact sizes by regula falsi (Illinois
    variant) inside whichever half holds the answer, stopping once a fitting plan
    uses all but ``FIT_SLACK`` of the target. The two ends, t = 1 and t = 2, keep
    every layer at its maximum sparsity, so their sizes are mostly remembered by
    ``sizes`` from one proposal to the next.
    """
    plan_at = lambda t: _toward_smallest(plan, space, t)  # noqa: E731
    over_at = lambda t: sizes.total(plan_at(t)) - target_bytes  # noqa: E731
    over_low: float  # bytes over the target at low and high; Illinois halves the stale end's
    over_high: float
    low, over_low = 0.0, over_at(0.0)
    if over_low <= 0:
        return plan
    high, over_high = 2.0, over_at(2.0)
    if over_high > 0:
        return None
    over_one = over_at(1.0)  # sparsity at the maximum, bits kept: the size is smooth on either side
    low, over_low, high, over_high = (low, over_low, 1.0, over_one) if over_one <= 0 else (1.0, over_one, high, over_high)
    stale_side = 0  # -1: low kept its end twice in a row, +1: high did
    for _ in range(_FIT_STEPS):
        if high - low < _FIT_RESOLUTION or -over_high <= FIT_SLACK * target_bytes:
            break
        secant = high - over_high * (high - low) / (over_high - over_low) if over_high != over_low else (low + high) / 2
        margin = (high - low) / 64  # never sit on an end of the bracket
        middle = min(max(secant, low + margin), high - margin)
        over_middle = over_at(middle)
        if over_middle <= 0:
            high, over_high = middle, over_middle
            over_low = over_low / 2 if stale_side == -1 else over_low
            stale_side = -1
        else:
            low, over_low = middle, over_middle
            over_high = over_high / 2 if stale_side == 1 else over_high
            stale_side = 1
    return plan_at(high)


def _toward_smallest(plan: Plan, space: SearchSpace, t: float) -> Plan:
    sparsity_step, bits_step = min(t, 1.0), max(t - 1.0, 0.0)
    layers = {}
    for name, setting in plan.layers.items():
        sparsity = setting.sparsity + sparsity_step * (max(space.sparsity_max, setting.sparsity) - setting.sparsity)
        bits = setting.bits - math.floor(bits_step * (setting.bits - min(space.bits_min, setting.bits)) + 1e-9)
        layers[name] = LayerSetting(sparsity=min(sparsity, 0.999), bits=bits, quantizer=setting.quantizer)
    return Plan(layers=layers, model=plan.model, target_bytes=plan.target_bytes)


def relative_distortion(model: nn.Module, plan: Plan) -> float:
    """Sum over layers of ||W - Q(W)||^2 / ||W||^2: a training-free proxy for the damage a plan does."""
    layers = compressible_layers(model)
    total = 0.0
    with torch.no_grad():
        for name, setting in plan.layers.items():
            weight = layers[name].weight.detach().float()
            error = dequantize(quantize(weight, setting)) - weight
            total += float(error.pow(2).sum() / weight.pow(2).sum().clamp(min=1e-12))
    return total


def best_uniform_plan(sizes: SizeAccountant, space: SearchSpace, target_bytes: int) -> Plan | None:
    """One sparsity and one bit-width for every layer: for each bit-width the least sparsity that fits,
    and of those the one of least relative distortion."""
    candidates = []
    for quantizer in space.quantizers:
        for bits in range(space.bits_min, space.bits_max + 1):
            plan = least_uniform_sparsity(sizes, space, bits, quantizer, target_bytes)
            if plan is not None:
                candidates.append((relative_distortion(sizes.model, plan), plan))
    return min(candidates, key=lambda item: item[0])[1] if candidates else None


def least_uniform_sparsity(
    sizes: SizeAccountant, space: SearchSpace, bits: int, quantizer: str, target_bytes: int
) -> Plan | None:
    def plan_at(sparsity: float) -> Plan:
        return Plan.uniform(space.layers, sparsity=sparsity, bits=bits, quantizer=quantizer)

    def fits(sparsity: float) -> bool:
        return sizes.total(plan_at(sparsity)) <= target_bytes

    if fits(space.sparsity_min):
        return plan_at(space.sparsity_min)
    if not fits(space.sparsity_max):
        return None
    low, high = space.sparsity_min, space.sparsity_max
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return plan_at(high)


def sensitivity_plan(
    sizes: SizeAccountant,
    space: SearchSpace,
    target_bytes: int,
    reference: Plan,
    score: Callable[[nn.Module], float],
) -> Plan | None:
    """Spend more of the budget on the layers whose compression hurts most.

    Each layer alone is compressed with the reference (uniform) setting and
    ``score`` (e.g. accuracy on a few validation images) measures the damage;
    the more sensitive half gets lower sparsity and one more bit, the least
    sensitive layers higher sparsity and one bit less; then the plan is fitted
    to the budget. The probing happens on a copy; ``sizes.model`` is not touched.
    """
    model = copy.deepcopy(sizes.model)
    layers = compressible_layers(model)
    base_score = score(model)
    drops: dict[str, float] = {}
    for name in space.layers:
        original = layers[name].weight.detach().clone()
        with torch.no_grad():
            layers[name].weight.copy_(dequantize(quantize(original, reference.layers[name])))
        drops[name] = base_score - score(model)
        with torch.no_grad():
            layers[name].weight.copy_(original)
    ranked = sorted(space.layers, key=lambda name: drops[name])
    settings = {}
    for rank, name in enumerate(ranked):
        share = rank / max(len(ranked) - 1, 1)  # 0 = least sensitive, 1 = most
        base = reference.layers[name]
        sparsity = space.sparsity_max - share * (space.sparsity_max - space.sparsity_min) * 0.8
        bits = min(max(base.bits + (1 if share > 0.66 else -1 if share < 0.33 else 0), space.bits_min), space.bits_max)
        settings[name] = LayerSetting(sparsity=sparsity, bits=bits, quantizer=base.quantizer)
    return fit_to_budget(sizes, Plan(layers=settings), space, target_bytes)
