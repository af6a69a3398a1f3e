"""The Z-step of the ADMM mode: project weights onto ``packed size <= target`` (Yang et al. 2020).

Given values V (one tensor per layer, the ADMM's W + U), the projection chooses
for every layer how many weights to keep and how many bits each kept weight
gets, so that the packed file fits the target and the squared distance between
V and its compressed form Z is small. It alternates two knapsacks:

* **keep, given the bits** (:func:`keep_for_bits`): weights are kept in
  decreasing order of ``v**2 / bits_of_its_layer`` while the budget lasts. The
  order is one global threshold on that ratio; it is found by bisection on the
  packed size (index, codebook, header and the uncompressed parts included),
  not on ``nnz * bits`` as in the paper.
* **bits, given the kept weights** (:func:`bits_for_kept`): every layer picks
  one bit-width; the choice that minimises the total quantization distortion
  within the budget is a multiple-choice knapsack, solved exactly by dynamic
  programming over bytes (costs rounded up to a coarse byte unit, so a solution
  never exceeds the budget).

The alternation starts from a seed plan (the best uniform allocation, or the
previous projection) and stops when the bits no longer change. It returns the
iterate of least distortion, the seed included, so it is never worse than its
seed. Every returned plan fits the target by the exact accountant.

The file's layers are entropy-coded, so a layer's exact bytes need its codes. Inside the two
knapsacks a layer is priced from the level counts of its kept weights (the quantizer's
``sorted_kept_counts``, no coding; within a few words of the exact bytes); each iterate is then
sized exactly, and if the estimates let it overshoot the target, the projection runs again on a
budget smaller by the overshoot.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from autocompress.allocation._budget import least_uniform_sparsity
from autocompress.allocation._space import SearchSpace
from autocompress.compress import (
    compressible_layers,
    dequantize,
    full_precision_weight,
    kept_count,
    magnitude_mask,
    magnitude_ranks,
    quantize,
)
from autocompress.pack import SizeAccountant, estimate_layer_bytes
from autocompress.plan import LayerSetting, Plan
from autocompress.quantizers import get_quantizer

# the bytes of one layer's entry at (layer, kept count, bits)
LayerPrice = Callable[[str, int, int], int]

MAX_ROUNDS = 8
_REFITS = 4  # projections on a smaller budget when the estimated prices let an iterate overshoot
DP_CELLS = 20_000  # byte resolution of the bits knapsack: the budget is cut into at most this many units
_THRESHOLD_STEPS = 60
_SLACK = 0.001  # a keep step may leave this share of the target unused


@dataclass(frozen=True)
class Projection:
    """A plan that fits the target, its exact packed bytes and its distortion sum ||V - Z||^2."""

    plan: Plan
    packed_bytes: int
    distortion: float
    rounds: int


def sparsity_for_kept(numel: int, n_kept: int) -> float:
    """A sparsity whose :func:`kept_count` is exactly ``n_kept``."""
    sparsity = (numel - n_kept) / numel
    if kept_count(numel, sparsity) != n_kept:  # float rounding at a .5 boundary: nudge toward the right count
        sparsity = math.nextafter(sparsity, 0.0 if kept_count(numel, sparsity) < n_kept else 1.0)
    assert kept_count(numel, sparsity) == n_kept
    return sparsity


class _Layers:
    """The values being projected, with what every step needs: sorted squares and kept-count bounds."""

    def __init__(self, sizes: SizeAccountant, space: SearchSpace) -> None:
        modules = compressible_layers(sizes.model)
        self.names = list(space.layers)
        self.weight = dict.fromkeys(self.names, 1.0)  # how much a unit of each layer's distortion counts
        self.values = {name: full_precision_weight(modules[name]).detach() for name in self.names}
        self.numel = {name: self.values[name].numel() for name in self.names}
        self.squares = {name: torch.sort(self.values[name].reshape(-1).double().pow(2)).values.cpu().numpy() for name in self.names}
        self.dropped = {name: np.concatenate([[0.0], np.cumsum(self.squares[name])]) for name in self.names}  # by pruned count
        # the values sorted ascending, with each one's place in the magnitude order (the order masks keep them in)
        # (numpy: a masked selection is single-threaded and fast there; torch's stalls on a busy machine)
        by_value = {name: torch.sort(self.values[name].reshape(-1).float().cpu()) for name in self.names}
        self.by_value = {name: by_value[name].values.numpy() for name in self.names}
        self.rank_by_value = {name: magnitude_ranks(self.values[name].cpu()).reshape(-1)[by_value[name].indices].numpy()
                              for name in self.names}
        self.least = {name: kept_count(self.numel[name], space.sparsity_max) for name in self.names}
        self.most = {name: kept_count(self.numel[name], space.sparsity_min) for name in self.names}
        self.sparsity_bounds = (space.sparsity_min, space.sparsity_max)

    def kept_at(self, name: str, threshold: float, bits: int) -> int:
        """Weights of ``name`` with c * v**2 / bits >= threshold (c: the layer's coefficient), within its bounds."""
        squares = self.squares[name]
        count = len(squares) - int(np.searchsorted(squares, threshold * bits / self.weight[name], side="left"))
        return min(max(count, self.least[name]), self.most[name])

    def weighted(self, coefficients: dict[str, float] | None) -> _Layers:
        """The same layers with each one's distortion weighted by its coefficient (1 where absent)."""
        other = copy.copy(self)
        other.weight = {name: float((coefficients or {}).get(name, 1.0)) for name in self.names}
        return other

    def kept_sorted(self, name: str, count: int) -> torch.Tensor:
        """The ``count`` weights a magnitude mask keeps, sorted ascending by value."""
        return torch.from_numpy(self.by_value[name][self.rank_by_value[name] < count])

    def dropped_energy(self, name: str, count: int) -> float:
        """Sum of the squares of the weights pruned when ``count`` are kept."""
        return float(self.dropped[name][self.numel[name] - count])

    def sparsity_of(self, name: str, count: int) -> float:
        """A sparsity that keeps exactly ``count`` weights of ``name`` and lies within the space's bounds.

        ``(numel - count) / numel`` can overshoot a bound by less than one weight (``kept_count``
        rounds): at the fewest or most allowed weights, the bound itself keeps the same count, and
        a plan outside the bounds would be one the search space cannot propose (not queued as a warm start)."""
        if count == self.least[name]:
            return self.sparsity_bounds[1]
        if count == self.most[name]:
            return self.sparsity_bounds[0]
        return sparsity_for_kept(self.numel[name], count)

    def plan(self, counts: dict[str, int], bits: dict[str, int], quantizer: str, model: str | None) -> Plan:
        return Plan(
            layers={name: LayerSetting(self.sparsity_of(name, counts[name]), bits[name], quantizer) for name in self.names},
            model=model,
        )


def exact_price(sizes: SizeAccountant, numel: dict[str, int], quantizer: str) -> LayerPrice:
    """A layer's exact bytes from the accountant (quantized and coded)."""
    return lambda name, count, bits: sizes.layer_bytes(name, LayerSetting(sparsity_for_kept(numel[name], count), bits, quantizer))


class _EstimatedPrice:
    """A layer's bytes from the level counts of its kept weights, without coding them (exact where the
    quantizer has no ``sorted_kept_counts``). Remembered per (layer, count, bits) for the projector's life."""

    def __init__(self, sizes: SizeAccountant, layers: _Layers, quantizer: str) -> None:
        self.layers, self.entry = layers, get_quantizer(quantizer)
        self.exact = exact_price(sizes, layers.numel, quantizer)
        self._prices: dict[tuple[str, int, int], int] = {}
        self._sorted: dict[str, tuple[int, torch.Tensor]] = {}

    def __call__(self, name: str, count: int, bits: int) -> int:
        key = (name, count, bits)
        if key not in self._prices:
            self._prices[key] = self._price(name, count, bits)
        return self._prices[key]

    def _price(self, name: str, count: int, bits: int) -> int:
        cached = self._sorted.get(name)
        if cached is None or cached[0] != count:
            cached = self._sorted[name] = (count, self.layers.kept_sorted(name, count))
        level_counts = self.entry.sorted_kept_counts(cached[1], bits)
        if level_counts is None:
            return self.exact(name, count, bits)
        numel = self.layers.numel[name]
        table = self.entry.table_length(self.entry.n_levels(bits, count), self.layers.values[name].shape[0])
        return estimate_layer_bytes(numel, count, level_counts.numpy(), table)


class Projector:
    """The projection of one set of weights (the accountant's model's), prepared once for many calls.

    Sorting each layer's values and ranking them by magnitude is most of the work of a projection of a
    small network; a search projects the same weights once per trial, with other coefficients."""

    def __init__(self, sizes: SizeAccountant, space: SearchSpace) -> None:
        self.sizes, self.space = sizes, space
        self.layers = _Layers(sizes, space)
        self.other = sizes.other_bytes(self.layers.names)
        self.price = _EstimatedPrice(sizes, self.layers, space.quantizers[0])

    def project(self, target_bytes: int, *, seed: Plan | None = None, max_rounds: int = MAX_ROUNDS,
                coefficients: dict[str, float] | None = None) -> Projection | None:
        """See :func:`project_to_budget`."""
        if seed is None:
            seed = best_uniform_by_distortion(self.sizes, self.space, target_bytes)
            if seed is None:
                return None
        budget = target_bytes
        for _ in range(_REFITS + 1):
            best, overshoot = self._project_within(budget, target_bytes, seed, max_rounds, coefficients)
            if best is not None or overshoot <= 0:
                return best
            budget -= overshoot  # the estimated prices were short by about this much
        return None

    def _project_within(self, budget: int, target_bytes: int, seed: Plan, max_rounds: int,
                        coefficients: dict[str, float] | None) -> tuple[Projection | None, int]:
        """The alternation on estimated prices within ``budget``; of its iterates, the least distortion one that
        fits ``target_bytes`` exactly, and the largest overshoot of the target by the iterates that did not."""
        sizes, space, other, price = self.sizes, self.space, self.other, self.price
        layers = self.layers.weighted(coefficients)
        quantizer = space.quantizers[0]
        best: Projection | None = None
        overshoot = 0

        def consider(counts: dict[str, int], bits: dict[str, int], distortion: float, rounds: int) -> None:
            nonlocal best, overshoot
            if best is None or distortion < best.distortion:
                plan = layers.plan(counts, bits, quantizer, seed.model)
                packed_bytes = sizes.total(plan)
                if packed_bytes <= target_bytes:
                    best = Projection(plan, packed_bytes, distortion, rounds)
                else:
                    overshoot = max(overshoot, packed_bytes - target_bytes)

        bits = {name: seed.layers[name].bits for name in layers.names}
        seed_counts = {name: kept_count(layers.numel[name], seed.layers[name].sparsity) for name in layers.names}
        seed_plan = layers.plan(seed_counts, bits, quantizer, seed.model)
        if sizes.total(seed_plan) <= target_bytes:
            table = _distortions(layers, seed_counts, {name: [bits[name]] for name in layers.names}, quantizer)
            consider(seed_counts, bits, sum(table[name][0] for name in layers.names), 0)
        choices = list(range(space.bits_min, space.bits_max + 1))
        for round_number in range(1, max_rounds + 1):
            counts = keep_for_bits(price, layers, bits, budget, other=other)
            if counts is None:
                break
            table = _distortions(layers, counts, {name: choices for name in layers.names}, quantizer)
            consider(counts, bits, sum(table[name][choices.index(bits[name])] for name in layers.names), round_number)
            new_bits = bits_for_kept(price, layers.names, counts, choices, table, budget - other)
            if new_bits is None:
                break
            consider(counts, new_bits, sum(table[name][choices.index(new_bits[name])] for name in layers.names), round_number)
            if new_bits == bits:
                break
            bits = new_bits
        if best is not None:
            assert best.packed_bytes <= target_bytes, f"projection produced {best.packed_bytes} bytes over {target_bytes}"
        return best, overshoot


def project_to_budget(
    sizes: SizeAccountant,
    space: SearchSpace,
    target_bytes: int,
    *,
    seed: Plan | None = None,
    max_rounds: int = MAX_ROUNDS,
    coefficients: dict[str, float] | None = None,
) -> Projection | None:
    """Project the accountant's model weights (the values V) onto the size constraint.

    ``seed`` gives the starting bits (and is itself a candidate when it fits);
    without it the best uniform allocation is the seed. Returns None when not even
    the smallest plan of ``space`` fits. The quantizer is ``space.quantizers[0]``.

    ``coefficients`` (layer -> c > 0, 1 where absent) weigh each layer's distortion: the projection
    then minimises ``sum_l c_l ||V_l - Q(V_l)||^2`` (keeping weights by ``c v**2 / bits``), and the
    returned ``distortion`` is that weighted sum. All ones give the plain projection exactly; a larger
    coefficient buys a layer more of the budget. This is the search space of the ``coefficients``
    space (after SPDY, Frantar & Alistarh 2022). To project the same weights many times, keep a
    :class:`Projector`.
    """
    return Projector(sizes, space).project(target_bytes, seed=seed, max_rounds=max_rounds, coefficients=coefficients)


def keep_for_bits(
    price: LayerPrice,
    layers: _Layers,
    bits: dict[str, int],
    target_bytes: int,
    *,
    other: int,
) -> dict[str, int] | None:
    """Kept counts per layer: the largest ``v**2 / bits`` weights that fit the budget (None if the fewest allowed do not).

    The counts fall as the threshold rises; the threshold is bisected (geometrically)
    on the layers' prices plus ``other``, and the returned counts fit by those prices."""

    def counts_at(threshold: float) -> dict[str, int]:
        return {name: layers.kept_at(name, threshold, bits[name]) for name in layers.names}

    def bytes_of(counts: dict[str, int]) -> int:
        return other + sum(price(name, counts[name], bits[name]) for name in layers.names)

    everything = {name: layers.most[name] for name in layers.names}
    if bytes_of(everything) <= target_bytes:
        return everything
    fewest = {name: layers.least[name] for name in layers.names}
    if bytes_of(fewest) > target_bytes:
        return None
    ratios = np.concatenate([layers.squares[name] * layers.weight[name] / bits[name] for name in layers.names])
    positive = ratios[ratios > 0]
    low = float(positive.min()) / 2 if positive.size else 1e-30  # keeps (nearly) everything: over the budget
    high = float(ratios.max()) * 2 + 1e-30  # keeps the fewest allowed: fits
    fitting = fewest
    for _ in range(_THRESHOLD_STEPS):
        middle = math.sqrt(low * high)
        counts = counts_at(middle)
        n_bytes = bytes_of(counts)
        if n_bytes <= target_bytes:
            high, fitting = middle, counts
            if target_bytes - n_bytes <= _SLACK * target_bytes:
                break
        else:
            low = middle
        if high / low < 1 + 1e-9:
            break
    return fitting


def bits_for_kept(
    price: LayerPrice,
    names: list[str],
    counts: dict[str, int],
    choices: list[int],
    distortion: dict[str, list[float]],
    layer_budget: int,
) -> dict[str, int] | None:
    """Each layer's bit-width (one of ``choices``) minimising total distortion with the layers' bytes
    within ``layer_budget``: a multiple-choice knapsack solved exactly by dynamic programming on a
    byte grid of at most ``DP_CELLS`` units (costs rounded up, so the result always fits).
    None when no choice fits."""
    if layer_budget <= 0:
        return None
    unit = max(1, math.ceil(layer_budget / DP_CELLS))
    capacity = layer_budget // unit
    inf = math.inf
    best = np.zeros(capacity + 1)  # best[c]: least distortion of the layers so far within c units
    picks: list[np.ndarray] = []
    for name in names:
        options = [
            (-(-price(name, counts[name], bits) // unit), distortion[name][index])
            for index, bits in enumerate(choices)
        ]
        updated = np.full(capacity + 1, inf)
        pick = np.full(capacity + 1, -1, dtype=np.int64)
        for index, (cost, error) in enumerate(options):
            if cost > capacity:
                continue
            candidate = np.full(capacity + 1, inf)
            candidate[cost:] = best[: capacity + 1 - cost] + error
            better = candidate < updated
            updated[better], pick[better] = candidate[better], index
        best = updated
        picks.append(pick)
    if not math.isfinite(best[capacity]):
        return None
    chosen: dict[str, int] = {}
    cell = capacity
    for name, pick in zip(reversed(names), reversed(picks)):
        index = int(pick[cell])
        chosen[name] = choices[index]
        cost = -(-price(name, counts[name], choices[index]) // unit)
        cell -= cost
    return {name: chosen[name] for name in names}


def _distortions(
    layers: _Layers, counts: dict[str, int], choices: dict[str, list[int]], quantizer: str
) -> dict[str, list[float]]:
    """c ||V - Q(V)||^2 of each layer at its kept count, for each bit-width in ``choices[layer]`` (c: its coefficient).

    From the kept weights sorted (one masked selection, no sort) where the quantizer can, else by quantizing."""
    entry = get_quantizer(quantizer)
    table: dict[str, list[float]] = {}
    with torch.no_grad():
        for name in layers.names:
            count = counts[name]
            errors = entry.sorted_kept_errors(layers.kept_sorted(name, count), choices[name])
            if errors is None:
                values = layers.values[name].float()
                errors = entry.distortions(values, magnitude_mask(values, count), choices[name])
            else:
                errors = [error + layers.dropped_energy(name, count) for error in errors]
            table[name] = [layers.weight[name] * error for error in errors]
    return table


def plan_distortion(sizes: SizeAccountant, plan: Plan) -> float:
    """Sum over the plan's layers of ||V - Q(V)||^2 for the accountant's model weights V."""
    modules = compressible_layers(sizes.model)
    total = 0.0
    with torch.no_grad():
        for name, setting in plan.layers.items():
            values = full_precision_weight(modules[name]).detach().float()
            total += float((dequantize(quantize(values, setting)) - values).double().pow(2).sum())
    return total


def best_uniform_by_distortion(sizes: SizeAccountant, space: SearchSpace, target_bytes: int) -> Plan | None:
    """The uniform allocation (one sparsity, one bit-width for all layers; for each bit-width the least
    sparsity that fits) of least ``plan_distortion``: the yardstick and the default seed of the projection."""
    candidates = []
    for bits in range(space.bits_min, space.bits_max + 1):
        plan = least_uniform_sparsity(sizes, space, bits, space.quantizers[0], target_bytes)
        if plan is not None:
            candidates.append((plan_distortion(sizes, plan), plan))
    return min(candidates, key=lambda item: item[0])[1] if candidates else None
