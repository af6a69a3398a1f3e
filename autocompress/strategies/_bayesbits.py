"""The Bayesian Bits mode (van Baalen et al. 2020): one training run learns every layer's bits and pruning.

The weights and the hard-concrete gates of :mod:`._bayesbits_gates` train together for ``gate_epochs``
(SGD on the weights as everywhere, Adam on the gates' ``log_alpha``, kept within +-LOG_ALPHA_BOUND). The
loss is the task loss plus ``lambda * (expected_bytes / goal - 1)``; the goal falls from the starting size
to the target over the first half, and the Lagrange multiplier ``lambda`` follows the constraint by dual
ascent, so the strength is set by the target alone. The hard gates then give the plan: 2, 4 or 8 bits per
layer and its sparsity. The hard fine-tune keeps, by default, each layer's largest weights, as many as its
gates kept (``gate_masks: magnitude``), or exactly the groups they kept (``gates``). Over the target, the
plan is repaired with the exact accountant as the other modes' plans are; then the usual hard fine-tune
(``final_epochs``) with that sparsity pattern fixed. The run is one trial of the study
(``strategy: bayesbits``), with the gates' own bytes and their gap to the target among its measurements.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from autocompress.allocation import SearchSpace, fit_to_budget
from autocompress.compress import compressible_layers, full_precision_weight, kept_count, magnitude_mask
from autocompress.data import TensorSet
from autocompress.engine import train
from autocompress.errors import AutocompressError
from autocompress.pack import SizeAccountant
from autocompress.plan import LayerSetting, Plan
from autocompress.search import SearchContext, SearchOutcome, Strategy, finetune_plan, plan_trial
from autocompress.settings import SearchSettings
from autocompress.strategies._bayesbits_gates import (
    LADDER_WIDTHS,
    QUANTIZER,
    ExpectedBytes,
    GatePlan,
    attach_gates_,
    detach_gates_,
    ladder_for,
)
from autocompress.units import format_size

MULTIPLIER_STEP = 0.5  # dual ascent step of lambda per training step, per unit of relative violation
LOG_ALPHA_BOUND = 4.0  # every log_alpha is kept in [-4, 4]: P(z > 0) in [0.08, 1], so a shut gate can open again
ANNEAL_SHARE = 0.5  # the constraint's bytes fall from the starting size to the target over this share of the steps
REFRESH_EVERY = 10  # steps between re-reads of the hard plan (its zeros and exact bytes)
REPORTS_PER_EPOCH = 4


@dataclass(frozen=True)
class GateSchedule:
    """How long the gates train and how fast; built from the settings by :meth:`of`."""

    epochs: float = 1.0
    gate_lr: float = 0.3
    lr: float = 0.01
    batch_size: int = 128
    groups: str = "kernel"
    multiplier_step: float = MULTIPLIER_STEP
    precision: str = "auto"

    @classmethod
    def of(cls, settings: SearchSettings) -> GateSchedule:
        return cls(epochs=settings.gate_epochs, gate_lr=settings.gate_lr, lr=settings.lr, batch_size=settings.batch_size,
                   groups=settings.gate_groups, precision=settings.precision)


@dataclass
class LagrangeMultiplier:
    """``lambda`` of the size constraint ``expected_bytes <= goal``, by dual ascent:
    ``lambda <- max(0, lambda + step * (expected / goal - 1))`` after every training step.

    The goal starts at the first expected size and falls linearly to the target over the first
    ``anneal_share`` of the steps (:meth:`aim`), so the gates close a few at a time rather than all at once.
    (A geometric update of ``lambda`` reached the target faster but overshot it: the gates lag ``lambda``,
    and all of them shut; benchmarks/README.md.)
    """

    target_bytes: int
    step: float
    anneal_share: float = ANNEAL_SHARE
    value: float = 0.0
    last_bytes: float = math.nan
    start_bytes: float = math.nan
    goal_bytes: float = math.nan

    def penalty(self, expected_bytes: Tensor) -> Tensor:
        self.last_bytes = float(expected_bytes.detach())
        if not math.isfinite(self.start_bytes):
            self.start_bytes = self.goal_bytes = max(self.last_bytes, float(self.target_bytes))
        return self.value * (expected_bytes / self.goal_bytes - 1)

    def aim(self, share_done: float) -> None:
        """Move the goal to where it is after ``share_done`` (0..1) of the steps."""
        if math.isfinite(self.start_bytes):
            remaining = max(0.0, 1.0 - share_done / self.anneal_share) if self.anneal_share > 0 else 0.0
            self.goal_bytes = self.target_bytes + (self.start_bytes - self.target_bytes) * remaining

    def update(self) -> None:
        """One dual ascent step on the last expected size."""
        if math.isfinite(self.last_bytes):
            self.value = max(0.0, self.value + self.step * (self.last_bytes / self.goal_bytes - 1))


@dataclass(frozen=True)
class GateOutcome:
    """What the gate training leaves: the hard plan, its exact bytes, and the final multiplier."""

    gates: GatePlan
    packed_bytes: int
    multiplier: float
    seconds: float


def train_gates_(model: nn.Module, train_set: TensorSet, *, space: SearchSpace, target_bytes: int, model_spec: str,
                 schedule: GateSchedule, device: torch.device, seed: int = 0,
                 on_step: Callable[[int], None] | None = None) -> GateOutcome:
    """Train ``model``'s weights and Bayesian Bits gates together, in place; the gates are removed at the end
    and ``model`` keeps its full-precision weights. Returns the hard gates' plan and its exact size."""
    started = time.perf_counter()
    ladder = ladder_for(space.bits_min, space.bits_max)
    model.to(device)
    shadow = copy.deepcopy(model)
    gated = attach_gates_(model, space.layers, ladder, seed=seed, device=device, groups=schedule.groups)
    try:
        expected = ExpectedBytes(model, gated, space, model_spec=model_spec, shadow=shadow)
        multiplier = LagrangeMultiplier(target_bytes, schedule.multiplier_step)
        gate_parameters = [parameter for gate in gated.values() for parameter in gate.parameters()]
        gates = torch.optim.Adam(gate_parameters, lr=schedule.gate_lr)
        steps_per_epoch = max(len(train_set) // schedule.batch_size, 1)
        total_steps = max(math.ceil(schedule.epochs * steps_per_epoch), 1)
        report_every = max(steps_per_epoch // REPORTS_PER_EPOCH, 1)

        def step_callback(step: int) -> None:
            if on_step is not None:
                on_step(step)
            multiplier.update()
            multiplier.aim(step / total_steps)
            with torch.no_grad():
                for parameter in gate_parameters:
                    parameter.clamp_(-LOG_ALPHA_BOUND, LOG_ALPHA_BOUND)
            if step % REFRESH_EVERY == 0:
                expected.refresh()
            if step % report_every == 0:
                tqdm.write(f"  gates step {step}: expected {multiplier.last_bytes:,.0f} B (goal {multiplier.goal_bytes:,.0f}), hard "
                           f"{expected.hard_bytes:,} B (target {target_bytes:,}), lambda {multiplier.value:.3g}; "
                           f"{plan_line(expected.hard)}")

        train(model, train_set, device=device, epochs=schedule.epochs, lr=schedule.lr, batch_size=schedule.batch_size,
              seed=seed, on_step=step_callback, penalty=lambda: multiplier.penalty(expected()), auxiliary=gates,
              precision=schedule.precision)
        model.eval()
        hard = expected.refresh()
        packed_bytes = expected.hard_bytes
    finally:
        detach_gates_(model)
    return GateOutcome(hard, packed_bytes, multiplier.value, time.perf_counter() - started)


def plan_line(gates: GatePlan | None) -> str:
    """Bits per layer as counts, and the share of output channels pruned."""
    if gates is None:
        return ""
    widths = Counter(setting.bits for setting in gates.plan.layers.values())
    kept = sum(int(channels.sum()) for channels in gates.kept_channels.values())
    total = sum(channels.numel() for channels in gates.kept_channels.values())
    shown = ", ".join(f"{count} at {bits} bits" for bits, count in sorted(widths.items()))
    return f"layers {shown}; {1 - kept / max(total, 1):.1%} of the pruning groups shut"


def repaired_plan(model: nn.Module, gates: GatePlan, context: SearchContext, *,
                  keep_groups: bool) -> tuple[Plan, dict[str, Tensor]]:
    """The plan and sparsity pattern of the hard fine-tune: the gates' plan, repaired by the exact accountant
    (more sparsity by magnitude, then fewer bits) if it is over the target.

    ``keep_groups``: the weights kept are the groups the gates kept (their pruned weights are zeroed now).
    Otherwise each layer keeps its largest weights, as many as its gates kept: the per-layer sparsity and
    bits are the gates' choice, the pattern the magnitude's, as in the other modes (the format stores
    any pattern, and its bytes are counted again here)."""
    modules = compressible_layers(model)
    if keep_groups:
        with torch.no_grad():
            for name, mask in gates.masks.items():
                full_precision_weight(modules[name]).mul_(mask)
    sizes = SizeAccountant(model, model_spec=context.model_spec)
    plan = gates.plan
    if sizes.total(plan) > context.target_bytes:
        repaired = fit_to_budget(sizes, plan, context.space, context.target_bytes)
        if repaired is None:
            raise AutocompressError(f"the gates' plan cannot be repaired onto {format_size(context.target_bytes)} within "
                                    "the bounds; raise the target or --max-sparsity")
        plan = repaired
    if keep_groups and plan is gates.plan:
        return plan, gates.masks
    masks = {}
    for name, setting in plan.layers.items():
        weight = full_precision_weight(modules[name]).detach()
        masks[name] = magnitude_mask(weight, kept_count(weight.numel(), setting.sparsity))
    return plan, masks


def gates_then_hard(model: nn.Module, start: Plan, context: SearchContext) -> tuple[Plan, dict[str, Any]]:
    """The :data:`~autocompress.search.Trainer` of the mode: gate training from ``start`` (every layer at the
    top of the ladder, nothing pruned), the hard plan, its repair if over, and the hard fine-tune."""
    settings = context.settings
    outcome = train_gates_(model, context.splits.train, space=context.space, target_bytes=context.target_bytes,
                           model_spec=context.model_spec, schedule=GateSchedule.of(settings), device=context.device,
                           seed=settings.seed, on_step=context.interrupt.check)
    gap = outcome.packed_bytes - context.target_bytes
    context.log(f"  gates' plan: {outcome.packed_bytes:,} B, {gap:+,} B from the target "
                f"({gap / context.target_bytes:+.1%}); {plan_line(outcome.gates)}")
    plan, masks = repaired_plan(model, outcome.gates, context, keep_groups=settings.gate_masks == "gates")
    if plan is not outcome.gates.plan:
        sparsity = [setting.sparsity for setting in plan.layers.values()]
        context.log(f"  repaired onto the target by the exact accountant: sparsity {min(sparsity):.2f}-{max(sparsity):.2f}, "
                    f"bits {sorted({setting.bits for setting in plan.layers.values()})}")
    context.log(f"  fine-tuning the plan hard for {settings.final_epochs:g} epoch(s), the sparsity pattern fixed "
                f"({settings.gate_masks})")
    finetune_plan(model, plan, context, masks=masks)
    measurements = {
        "gate_plan_bytes": outcome.packed_bytes,
        "gate_gap_bytes": gap,
        "repaired": plan is not outcome.gates.plan,
        "gate_plan": {name: setting.to_dict() for name, setting in outcome.gates.plan.layers.items()},
        "lagrange_multiplier": round(outcome.multiplier, 6),
        "gate_seconds": round(outcome.seconds, 1),
    }
    return plan, measurements


def top_plan(space: SearchSpace, model_spec: str) -> Plan:
    """Where the gates start: every layer at the widest width of the ladder, nothing pruned."""
    bits = ladder_for(space.bits_min, space.bits_max)[-1]
    return Plan(layers={name: LayerSetting(sparsity=space.sparsity_min, bits=bits, quantizer=QUANTIZER)
                        for name in space.layers}, model=model_spec)


class BayesBitsStrategy(Strategy):
    name = "bayesbits"
    scopes = ("bayesbits",)
    summary = ("gates learned with the weights choose each layer's 2, 4 or 8 bits and its pruning under the "
               "expected bytes (Bayesian Bits, van Baalen et al. 2020), then fine-tuned hard")
    training_phase = "gate_epochs"  # compare: half the budget here, half for the hard fine-tune
    hyperparameters = ("target size", "gate epochs", "gate learning rate", "gate groups", "gate masks", "final epochs",
                       "learning rate", "max sparsity", "min bits", "max bits")

    def settings_problem(self, settings: SearchSettings) -> tuple[tuple[str, ...], str] | None:
        if ladder_for(settings.bits_min, settings.bits_max):
            return None
        return (("bits_min", "bits_max"), f"mode bayesbits keeps {', '.join(map(str, LADDER_WIDTHS))} bits; none lies "
                f"in {settings.bits_min}..{settings.bits_max} (--min-bits..--max-bits): widen the bounds")

    def prepare(self, settings: SearchSettings) -> SearchSettings:
        """The mode quantizes on the symmetric uniform grid, whatever the quantizers given."""
        return dataclasses.replace(settings, quantizers=[QUANTIZER])

    def describe(self, settings: SearchSettings) -> str:
        ladder = ladder_for(settings.bits_min, settings.bits_max)
        return (f"Bayesian Bits mode: {settings.gate_epochs:g} epoch(s) of gates and weights together (bits "
                f"{'/'.join(map(str, ladder))}, a pruning gate per {settings.gate_groups}), strength by a Lagrange multiplier, then "
                f"{settings.final_epochs:g} epoch(s) with the plan hard")

    def run(self, context: SearchContext) -> SearchOutcome:
        return plan_trial(context, top_plan(context.space, context.model_spec), strategy=self.name,
                          train=gates_then_hard, extra={"mode": self.name})
