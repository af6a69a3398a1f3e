"""Bayesian Bits (van Baalen et al. 2020) on the format's own grid: gates, the decomposition, expected bytes.

**Decomposition.** A layer's weight ``W`` is quantized on the symmetric ``uniform`` grid (one scale per
output channel) at each width of a power-of-two *ladder*, ``b0 < b1 < ...`` (2, 4, 8 bits within
``--min-bits``..``--max-bits``): ``x_k = Q_{b_k}(W)``. The gated weight is

    W_q = z_0 * (x_0 + z_1 * (x_1 - x_0 + z_2 * (x_2 - x_1 + ...)))

so with the doubling gates ``z_1..z_k`` open and the rest shut it is exactly ``Q_{b_k}(W)``, the weight
the packed file stores for a layer at ``b_k`` bits. The paper quantizes each residual on a grid nested in
the previous one (scale ``s/(2^b + 1)``); the format's grids for 2, 4 and 8 bits do not nest, so the
residuals here are the differences of the format's own quantizations, and every gate configuration is a
plan the file can hold. ``z_0`` is the pruning gate (0 bits): one per output channel of a convolution
(a linear layer's outputs are classes, so it has none). Rounding passes the gradient straight through.

**Gates.** Each ``z`` is a hard-concrete variable (Louizos et al. 2018) with a learned ``log_alpha``:
while training it is sampled, ``z = clamp(sigmoid((logit(u) + log_alpha) / BETA) * (ZETA - GAMMA) + GAMMA, 0, 1)``
with ``u ~ U(0, 1)``; in evaluation it is hard, open where ``P(z > 0) >= 1/2``, and the plan is read
off the same hard gates.

**Expected bytes.** With ``p_k = P(z_k > 0)`` the layer stores ``b_k`` bits with probability
``p_1 ... p_k (1 - p_{k+1})`` and keeps ``fan_in * sum_c P(z_0c > 0)`` weights in expectation.
:class:`ExpectedBytes` prices each width with the packed file's own bytes: at every refresh, the exact
bytes of each layer's entry at each width of the ladder for the current hard plan's zeros (its mask and
codes entropy-coded, as the file stores them), and around that kept count the slope of the coded size in
the kept weights (a mask bit's information plus a code's, both from the same layer). Where the gates are
hard this is the exact size of the file (the test compares it with the accountant); in between it is a
smooth estimate, differentiable in every ``log_alpha``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from autocompress.allocation import SearchSpace
from autocompress.compress import compressible_layers, full_precision_weight, kept_count, magnitude_mask
from autocompress.pack import SizeAccountant
from autocompress.plan import LayerSetting, Plan
from autocompress.quantizers import get_quantizer

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1  # hard-concrete temperature and stretch (Louizos et al. 2018)
QUANTIZER = "uniform"
LADDER_WIDTHS = (2, 4, 8)
OPEN_LOG_ALPHA = 2.0  # initial log_alpha: P(open) ~ 0.97, so training starts from the top of the ladder, nothing pruned
_EPS = 1e-6
GROUP_DIMS = {"channel": 1, "kernel": 2}  # leading weight dimensions that one pruning gate spans the rest of


def ladder_for(bits_min: int, bits_max: int) -> tuple[int, ...]:
    """The power-of-two widths of :data:`LADDER_WIDTHS` within the bounds (empty when none is)."""
    return tuple(bits for bits in LADDER_WIDTHS if bits_min <= bits <= bits_max)


def open_probability(log_alpha: Tensor) -> Tensor:
    """``P(z > 0)`` of a hard-concrete gate: ``sigmoid(log_alpha - BETA * log(-GAMMA / ZETA))``."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


def sample_gate(log_alpha: Tensor, uniform: Tensor) -> Tensor:
    """A hard-concrete sample from the uniform noise ``uniform`` (same shape), differentiable in ``log_alpha``."""
    noise = uniform.clamp(_EPS, 1 - _EPS)
    soft = torch.sigmoid((torch.log(noise) - torch.log1p(-noise) + log_alpha) / BETA)
    return (soft * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def hard_gate(log_alpha: Tensor) -> Tensor:
    """The gate in evaluation and in the plan: 1 where ``P(z > 0) >= 1/2``, else 0."""
    return (open_probability(log_alpha) >= 0.5).to(log_alpha.dtype)


def quantized_on_grid(weight: Tensor, bits: int) -> Tensor:
    """``weight`` quantized by the ``uniform`` quantizer at ``bits`` with nothing pruned (no gradient)."""
    with torch.no_grad():
        quantizer = get_quantizer(QUANTIZER)
        full = torch.ones_like(weight, dtype=torch.bool)
        codes, table = quantizer.quantize(weight, full, bits)
        return quantizer.dequantize(codes, table, bits).to(weight.dtype)


class GatedWeight(nn.Module):
    """The Bayesian Bits parametrization of one layer's weight (``torch.nn.utils.parametrize``).

    ``bit_log_alpha[k - 1]`` gates the doubling to ``ladder[k]``; ``channel_log_alpha`` (None for a linear
    layer) holds the output channels' pruning gates. Training samples the gates with ``generator``;
    evaluation uses :func:`hard_gate`. Forced values (tests, a plan read back) go through :meth:`force`.
    """

    def __init__(self, ladder: tuple[int, ...], groups: tuple[int, ...] | None, *, generator: torch.Generator,
                 init: float = OPEN_LOG_ALPHA) -> None:
        super().__init__()
        self.ladder = ladder
        self.generator = generator
        self.bit_log_alpha = nn.Parameter(torch.full((len(ladder) - 1,), init))
        self.channel_log_alpha = nn.Parameter(torch.full(groups, init)) if groups is not None else None

    def gates(self) -> tuple[Tensor, Tensor | None]:
        """The doubling gates and the channel gates of this forward pass (sampled or hard)."""
        return self._gate(self.bit_log_alpha), None if self.channel_log_alpha is None else self._gate(self.channel_log_alpha)

    def _gate(self, log_alpha: Tensor) -> Tensor:
        if not self.training:
            return hard_gate(log_alpha)
        noise = torch.rand(log_alpha.shape, generator=self.generator, device=self.generator.device)
        return sample_gate(log_alpha, noise.to(log_alpha.device))

    def forward(self, weight: Tensor) -> Tensor:
        bit_gates, channel_gates = self.gates()
        return gated_weight(weight, self.ladder, bit_gates, channel_gates)

    def force(self, *, bits: int, open_channels: Tensor | None = None, strength: float = 30.0) -> None:
        """Set ``log_alpha`` so the hard gates give ``bits`` and keep ``open_channels`` (boolean; all when None)."""
        level = self.ladder.index(bits)
        with torch.no_grad():
            for k in range(len(self.ladder) - 1):
                self.bit_log_alpha[k] = strength if k < level else -strength
            if self.channel_log_alpha is not None:
                keep = torch.ones_like(self.channel_log_alpha, dtype=torch.bool) if open_channels is None else open_channels
                self.channel_log_alpha.copy_(torch.where(keep, strength, -strength))


def gated_weight(weight: Tensor, ladder: tuple[int, ...], bit_gates: Tensor, channel_gates: Tensor | None) -> Tensor:
    """The decomposition ``z_0 * (x_0 + z_1 * (x_1 - x_0 + ...))``; rounding passes the gradient straight through."""
    levels = [weight + (quantized_on_grid(weight, bits) - weight).detach() for bits in ladder]
    residual = torch.zeros_like(weight)
    for k in range(len(ladder) - 1, 0, -1):
        residual = bit_gates[k - 1] * (levels[k] - levels[k - 1] + residual)
    gated = levels[0] + residual
    if channel_gates is not None:
        gated = gated * expand_groups(channel_gates, weight)
    return gated


def expand_groups(group_values: Tensor, weight: Tensor) -> Tensor:
    """One value per pruning group (output channel, or kernel: output x input channel) spread over its weights."""
    return group_values.view(*group_values.shape, *([1] * (weight.dim() - group_values.dim()))).expand_as(weight)


def attach_gates_(model: nn.Module, layers: tuple[str, ...], ladder: tuple[int, ...], *, seed: int,
                  device: torch.device, groups: str = "channel") -> dict[str, GatedWeight]:
    """Parametrize each of ``layers`` with a :class:`GatedWeight` (in place); convolutions get pruning gates
    per output channel (``groups="channel"``) or per kernel (``"kernel"``: one per output x input channel)."""
    modules = compressible_layers(model)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    gated: dict[str, GatedWeight] = {}
    for name in layers:
        module = modules[name]
        shape = tuple(module.weight.shape[: GROUP_DIMS[groups]]) if isinstance(module, nn.Conv2d) else None
        gate = GatedWeight(ladder, shape, generator=generator).to(device)
        parametrize.register_parametrization(module, "weight", gate)
        gated[name] = gate
    return gated


def detach_gates_(model: nn.Module) -> None:
    """Remove the parametrizations, leaving the full-precision weights."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)


@dataclass
class GatePlan:
    """The plan the hard gates give, the weights each layer keeps, and the doubling level of each layer."""

    plan: Plan
    masks: dict[str, Tensor]
    kept_channels: dict[str, Tensor]  # boolean per pruning group (per output channel where a layer has no gates)


def read_plan(model: nn.Module, gated: dict[str, GatedWeight], space: SearchSpace, *, model_spec: str) -> GatePlan:
    """The hard gates' plan. A layer keeps at least one channel and at most ``space.sparsity_max`` of its
    weights go (the most probable gates are kept open); below ``space.sparsity_min`` the smallest kept
    weights are pruned as well."""
    modules = compressible_layers(model)
    layers: dict[str, LayerSetting] = {}
    masks: dict[str, Tensor] = {}
    kept_channels: dict[str, Tensor] = {}
    for name, gate in gated.items():
        weight = full_precision_weight(modules[name]).detach()
        level = int(hard_gate(gate.bit_log_alpha).cumprod(0).sum().item()) if len(gate.ladder) > 1 else 0
        channels = _kept_groups(gate, weight, space.sparsity_max)
        group_size = weight.numel() // channels.numel()
        sparsity = max(float((~channels).sum().item()) * group_size / weight.numel(), space.sparsity_min)
        channel_mask = expand_groups(channels, weight)
        n_kept = kept_count(weight.numel(), sparsity)
        masks[name] = channel_mask if n_kept == int(channel_mask.sum()) else magnitude_mask(weight * channel_mask, n_kept)
        layers[name] = LayerSetting(sparsity=sparsity, bits=gate.ladder[level], quantizer=QUANTIZER)
        kept_channels[name] = channels
    return GatePlan(Plan(layers=layers, model=model_spec), masks, kept_channels)


def _kept_groups(gate: GatedWeight, weight: Tensor, sparsity_max: float) -> Tensor:
    """Boolean per pruning group: the open gates, at least one and at most ``sparsity_max`` of them shut."""
    if gate.channel_log_alpha is None:
        return torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
    log_alpha = gate.channel_log_alpha.detach()
    keep = hard_gate(log_alpha).bool()
    groups = keep.numel()
    least_kept = max(1, groups - math.floor(sparsity_max * groups + 1e-9))
    if int(keep.sum()) < least_kept:
        flat = torch.zeros(groups, dtype=torch.bool, device=keep.device)
        flat[torch.topk(log_alpha.reshape(-1), least_kept).indices] = True
        keep = flat.view_as(keep)
    return keep


class ExpectedBytes:
    """The packed file's expected size under the gates, in bytes (a differentiable tensor).

    Everything but the gated layers (header, batch norms, biases) is counted once by the accountant.
    Each gated layer's cost at width ``b`` is its exact entry bytes at the hard plan's kept count (coded
    as the file codes it), moved along the slope of the coded size in the kept count. :meth:`refresh`
    re-reads the hard plan (its zeros and exact bytes); call it every few steps while training. At a hard
    gate configuration the value is the accountant's size.
    """

    def __init__(self, model: nn.Module, gated: dict[str, GatedWeight], space: SearchSpace, *, model_spec: str,
                 shadow: nn.Module) -> None:
        """``shadow`` is a copy of ``model`` made before the gates were attached (it holds the hard plan's weights)."""
        self.model = model
        self.gated = gated
        self.space = space
        self.model_spec = model_spec
        self._modules = compressible_layers(model)
        self._shadow = shadow
        self._shadow_weights = {name: full_precision_weight(module) for name, module in compressible_layers(self._shadow).items()}
        self._sizes = SizeAccountant(self._shadow, model_spec=model_spec)
        self.other_bytes = self._sizes.other_bytes(list(gated))
        self._widths: dict[str, list[_WidthCost]] = {}  # per gated layer, one per width of its ladder
        self.hard: GatePlan | None = None
        self.hard_bytes = 0
        self.refresh()

    def refresh(self) -> GatePlan:
        """Read the hard plan off the gates now; remember its sparse index costs and its exact bytes."""
        hard = read_plan(self.model, self.gated, self.space, model_spec=self.model_spec)
        with torch.no_grad():
            for name, mask in hard.masks.items():
                self._shadow_weights[name].copy_(full_precision_weight(self._modules[name]).detach() * mask)
        for name, mask in hard.masks.items():
            self._widths[name] = [self._width_cost(name, int(mask.sum()), hard.plan.layers[name].sparsity, bits)
                                  for bits in self.gated[name].ladder]
        self.hard = hard
        self.hard_bytes = self._sizes.total(hard.plan)
        return hard

    def __call__(self) -> Tensor:
        total: Tensor | float = float(self.other_bytes)
        for name, gate in self.gated.items():
            total = total + self.layer(name, gate)
        return torch.as_tensor(total)

    def layer(self, name: str, gate: GatedWeight) -> Tensor:
        """The expected bytes of one gated layer's entry."""
        weight = full_precision_weight(self._modules[name])
        numel = weight.numel()
        bit_probability = width_probabilities(open_probability(gate.bit_log_alpha))
        if gate.channel_log_alpha is None:
            kept = torch.tensor(float(numel), device=bit_probability.device)
        else:
            kept = open_probability(gate.channel_log_alpha).sum() * (numel // gate.channel_log_alpha.numel())
        # the hard plan's bounds: at most sparsity_max of the groups shut (at least one open), at least sparsity_min pruned
        groups = 1 if gate.channel_log_alpha is None else gate.channel_log_alpha.numel()
        least_kept = max(1, groups - math.floor(self.space.sparsity_max * groups + 1e-9)) * (numel // groups)
        most_kept = numel - round(self.space.sparsity_min * numel)
        kept = kept.clamp(min=float(min(least_kept, most_kept)), max=float(most_kept))
        expected = torch.zeros((), device=bit_probability.device)
        for probability, width in zip(bit_probability, self._widths[name], strict=True):
            expected = expected + probability * width.at(kept)
        return expected

    def _width_cost(self, name: str, n_kept: int, sparsity: float, bits: int) -> _WidthCost:
        """One width's exact bytes at the hard plan's ``n_kept``, and their slope in the kept count."""
        numel = full_precision_weight(self._modules[name]).numel()
        size = self._sizes.layer_size(name, LayerSetting(sparsity, bits, QUANTIZER))
        exact = size.cost.total
        if n_kept >= numel:
            return _WidthCost(float(exact), float(numel), 0.0)  # nothing pruned: no mask; the hard plan keeps all
        codes_bits = 8 * size.cost.values
        mask_bit = math.log2((numel - n_kept) / n_kept)  # d/dk of n H(k/n): one more kept weight's mask information
        return _WidthCost(float(exact), float(n_kept), (mask_bit + codes_bits / n_kept) / 8)


def width_probabilities(open_probabilities: Tensor) -> Tensor:
    """``P(width = ladder[k])`` from the doubling gates' open probabilities: ``p_1 ... p_k (1 - p_{k+1})``."""
    reach = torch.cat([open_probabilities.new_ones(1), torch.cumprod(open_probabilities, 0)])
    stop = torch.cat([1 - open_probabilities, open_probabilities.new_ones(1)])
    return reach * stop


@dataclass(frozen=True)
class _WidthCost:
    """A layer's bytes at one width: ``exact`` at ``kept`` weights, changing by ``slope`` a weight around it."""

    exact: float
    kept: float
    slope: float

    def at(self, kept: Tensor) -> Tensor:
        """The bytes at a real-valued kept count: exact where it is the hard plan's, linear around it."""
        return self.exact + self.slope * (kept - self.kept)
