"""The coefficient space: a few sensitivity coefficients, each point a plan that fits the budget exactly.

After SPDY (Frantar & Alistarh 2022): the sampler does not propose each layer's sparsity and bits.
It proposes one coefficient per group of layers, and the projection turns the coefficients into the
plan of least coefficient-weighted weight distortion within the exact byte budget (two alternating
knapsacks, :class:`Projector`). So every point is a sensible plan on the budget, no trial is spent on a
plan that must be repaired, and the dimension is the number of groups (8 for the CIFAR ResNets) rather
than two per layer. All coefficients at 1 give the plain projection, the search's warm start; a larger
coefficient buys its layers a larger share of the budget.

Layers that play the same part in the same stage share one coefficient: the group is the name without
its block indices (``layer2.1.conv1`` -> ``layer2.conv1``; a name of numbers only is its own group). One
coefficient per layer tied with this grouping on ResNet-20 and was removed (docs/experiments/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autocompress.allocation._projection import Projector
from autocompress.allocation._space import SearchSpace
from autocompress.allocation._suggest import Suggests
from autocompress.plan import Plan

PARAM_SUFFIX = ".coefficient"


def group_of(layer: str) -> str:
    """The group a layer's coefficient belongs to."""
    parts = layer.split(".")
    named = [part for part in parts if not part.isdigit()]
    return ".".join(named) if named else layer


def layer_groups(layers: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Group name -> its layers, in the order the groups first appear."""
    groups: dict[str, list[str]] = {}
    for layer in layers:
        groups.setdefault(group_of(layer), []).append(layer)
    return {name: tuple(members) for name, members in groups.items()}


@dataclass
class CoefficientSpace:
    """Trials propose ``<group>.coefficient`` in [1/range, range] (log scale); ``plan_for`` projects them."""

    bounds: SearchSpace  # per-layer bounds every plan respects (absolute, no anchor)
    projector: Projector
    seed_plan: Plan  # where the projection starts its bits from (the best uniform plan)
    groups: dict[str, tuple[str, ...]]
    coefficient_range: float = 4.0

    @classmethod
    def build(cls, bounds: SearchSpace, projector: Projector, seed_plan: Plan, *, coefficient_range: float) -> CoefficientSpace:
        return cls(bounds, projector, seed_plan, layer_groups(bounds.layers), coefficient_range)

    def suggest(self, trial: Suggests) -> dict[str, float]:
        """The trial's coefficient of every layer (its group's)."""
        low, high = 1.0 / self.coefficient_range, self.coefficient_range
        by_group = {group: trial.suggest_float(f"{group}{PARAM_SUFFIX}", low, high, log=True) for group in self.groups}
        return self.per_layer(by_group)

    def per_layer(self, by_group: dict[str, float]) -> dict[str, float]:
        return {layer: by_group[group] for group, members in self.groups.items() for layer in members}

    def ones(self) -> dict[str, float]:
        """The parameters of the all-ones point (the plain projection)."""
        return {f"{group}{PARAM_SUFFIX}": 1.0 for group in self.groups}

    def plan_for(self, coefficients: dict[str, float], target_bytes: int, *, model: str | None = None) -> Plan | None:
        """The plan of least coefficient-weighted distortion within ``target_bytes`` (None: nothing fits)."""
        projection = self.projector.project(target_bytes, seed=self.seed_plan, coefficients=coefficients)
        if projection is None:
            return None
        projection.plan.model = model
        return projection.plan
