"""The two naive ways of combining pruning and quantization, done naively on purpose.

They exist for ``autocompress compare``: each runs its steps one after the
other, the way a first attempt would, and measures what goes wrong on the way.

* **prune, then quantize**: magnitude-prune every layer to the plan's sparsity
  and retrain with the mask fixed; then post-training quantization with the
  textbook b-bit linear quantizer: ``2**bits`` evenly spaced levels from the
  layer's smallest to its largest weight, no code reserved for zero (zero is
  a level only by accident); then quantization-aware training
  (straight-through, levels fixed) without the mask.
* **quantize, then prune**: quantization-aware training at the plan's bits
  with every weight kept; the weights are replaced by their quantized values;
  then magnitude pruning, and retraining of the quantized weights themselves
  (no full-precision copy: after every step each weight is rounded back to
  its layer's codebook).

Both end with the weights the naive model computes with (on its codebook).
The caller packs them under the plan's sparsity and bits with a k-means
codebook (which keeps up to ``2**bits - 1`` distinct values exactly), so the
packed file fits the same target as every other strategy and loses as little
as possible of what the pipeline produced; only the re-pruning to the plan's
sparsity is forced on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocompress.compress import (
    CompressibleLayer,
    attach_fake_quant_,
    compressible_layers,
    dequantize,
    detach_fake_quant_,
    full_precision_weight,
    kept_count,
    magnitude_mask,
    quantize,
)
from autocompress.data import DataSplits
from autocompress.engine import evaluate, train
from autocompress.pipeline import finetune_under_plan_, recalibrate_bn
from autocompress.plan import LayerSetting, Plan
from autocompress.search import SearchContext, SearchOutcome, Strategy, plan_trial
from autocompress.strategies._single import uniform_plan

StepCallback = Callable[[int], None]


@dataclass
class NaiveRun:
    """What one naive pipeline needs: data, device, the training budget and how to train."""

    splits: DataSplits
    device: torch.device
    epochs: float  # the whole budget; each of the two training phases gets half
    lr: float = 0.01
    batch_size: int = 128
    seed: int = 0
    on_step: StepCallback | None = None  # e.g. an interrupt check
    progress: bool = True
    precision: str = "auto"  # the training steps' number format (see engine.train)


@dataclass
class NaiveOutcome:
    """Failure-mode measurements (fractions in [0, 1]) and validation accuracy after each stage."""

    measurements: dict[str, float] = field(default_factory=dict)
    stage_val_accuracy: dict[str, float] = field(default_factory=dict)


class _NearestLevel(nn.Module):
    """Parametrization: the nearest level of a fixed codebook forward, identity gradient backward."""

    levels: torch.Tensor  # a buffer, sorted

    def __init__(self, levels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("levels", torch.sort(levels.detach().float()).values, persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        hard = nearest_level(weight.detach(), self.levels).to(weight.dtype)
        return weight + (hard - weight).detach()


def nearest_level(values: torch.Tensor, sorted_levels: torch.Tensor) -> torch.Tensor:
    """Each value replaced by the nearest of ``sorted_levels``."""
    if sorted_levels.numel() == 1:
        return sorted_levels.expand_as(values).clone()
    midpoints = (sorted_levels[1:] + sorted_levels[:-1]) / 2
    return sorted_levels[torch.bucketize(values, midpoints)]


def min_max_levels(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``2**bits`` evenly spaced levels from the tensor's minimum to its maximum."""
    low, high = weight.min().float(), weight.max().float()
    return low + (high - low) * torch.arange(2**bits, device=weight.device, dtype=torch.float32) / (2**bits - 1)


def magnitude_masks(model: nn.Module, plan: Plan) -> dict[str, torch.Tensor]:
    """The plan's magnitude mask of every layer it names (True = kept)."""
    layers = compressible_layers(model)
    return {name: magnitude_mask(layers[name].weight, kept_count(layers[name].weight.numel(), setting.sparsity))
            for name, setting in plan.layers.items()}


def prune_then_quantize_(model: nn.Module, plan: Plan, run: NaiveRun) -> NaiveOutcome:
    """Prune + retrain, then naive min-max linear quantization, then QAT without the mask (in place)."""
    outcome = NaiveOutcome()
    layers = compressible_layers(model)
    masks = magnitude_masks(model, plan)
    _zero_pruned_(layers, masks)
    _train_phase(model, run, phase=0, after_step=lambda: _zero_pruned_(layers, masks))
    outcome.stage_val_accuracy["pruned_retrained"] = _val(model, run)

    codebooks = {name: min_max_levels(layers[name].weight.detach(), setting.bits) for name, setting in plan.layers.items()}
    pruned = {name: ~mask for name, mask in masks.items()}
    quantized = {name: nearest_level(layers[name].weight.detach(), codebooks[name]) for name in plan.layers}
    outcome.measurements["pruned_nonzero_after_quantization"] = _nonzero_share(quantized, pruned)
    _attach_(layers, codebooks)
    try:
        outcome.stage_val_accuracy["quantized"] = _val(model, run)
        _train_phase(model, run, phase=1)
        recalibrate_bn(model, run.splits.train, device=run.device, seed=run.seed)
        outcome.stage_val_accuracy["after_qat"] = _val(model, run)
        latent = {name: full_precision_weight(layers[name]).detach().clone() for name in plan.layers}
    finally:
        _detach_(layers, keep_quantized=True)  # the model computes with the quantized weights: they are its result
    after_qat = {name: layers[name].weight.detach() for name in plan.layers}
    outcome.measurements["pruned_nonzero_after_qat"] = _nonzero_share(after_qat, pruned)
    outcome.measurements["pruned_latent_nonzero_after_qat"] = _nonzero_share(latent, pruned)
    # what the plan's own magnitude mask keeps now, among the weights the pruning step removed
    final_kept = magnitude_masks(model, plan)
    outcome.measurements["pruned_kept_by_final_mask"] = _nonzero_share(
        {name: final_kept[name].float() for name in plan.layers}, pruned)
    return outcome


def quantize_then_prune_(model: nn.Module, plan: Plan, run: NaiveRun) -> NaiveOutcome:
    """QAT with every weight kept, weights := their codes, magnitude pruning, low-precision retraining (in place)."""
    outcome = NaiveOutcome()
    layers = compressible_layers(model)
    dense_plan = Plan({name: LayerSetting(0.0, setting.bits, setting.quantizer) for name, setting in plan.layers.items()})
    attach_fake_quant_(model, dense_plan)
    try:
        _train_phase(model, run, phase=0)
    finally:
        detach_fake_quant_(model)
    codebooks: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, setting in dense_plan.layers.items():
            codes = quantize(layers[name].weight, setting)
            layers[name].weight.copy_(dequantize(codes))
            codebooks[name] = torch.sort(codes.table.float()).values
    recalibrate_bn(model, run.splits.train, device=run.device, seed=run.seed)
    outcome.stage_val_accuracy["quantized"] = _val(model, run)

    masks = magnitude_masks(model, plan)
    _zero_pruned_(layers, masks)
    recalibrate_bn(model, run.splits.train, device=run.device, seed=run.seed)
    outcome.stage_val_accuracy["pruned"] = _val(model, run)
    before = {name: layers[name].weight.detach().clone() for name in plan.layers}

    def round_back() -> None:  # no full-precision copy: the stored weight is the quantized one
        with torch.no_grad():
            for name in plan.layers:
                weight = layers[name].weight
                weight.copy_(nearest_level(weight, codebooks[name]) * masks[name])

    _train_phase(model, run, phase=1, after_step=round_back)
    recalibrate_bn(model, run.splits.train, device=run.device, seed=run.seed)
    outcome.stage_val_accuracy["pruned_retrained"] = _val(model, run)
    changed = {name: (layers[name].weight.detach() != before[name]).float() for name in plan.layers}
    outcome.measurements["kept_codes_changed_by_retraining"] = _nonzero_share(changed, masks)
    pruned = {name: ~mask for name, mask in masks.items()}
    outcome.measurements["pruned_nonzero_after_qat"] = _nonzero_share(
        {name: layers[name].weight.detach() for name in plan.layers}, pruned)
    return outcome


def _train_phase(model: nn.Module, run: NaiveRun, *, phase: int, after_step: Callable[[], None] | None = None) -> None:
    """Half of the budget of fine-tuning; ``after_step`` runs after every optimizer step."""

    def on_step(step: int) -> None:
        if after_step is not None:
            after_step()
        if run.on_step is not None:
            run.on_step(step)

    if run.epochs > 0:
        train(model, run.splits.train, device=run.device, epochs=run.epochs / 2, lr=run.lr, batch_size=run.batch_size,
              seed=run.seed + phase * 1000, progress=run.progress, on_step=on_step, precision=run.precision)


def _zero_pruned_(layers: dict[str, CompressibleLayer], masks: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, mask in masks.items():
            layers[name].weight.mul_(mask)


def _attach_(layers: dict[str, CompressibleLayer], codebooks: dict[str, torch.Tensor]) -> None:
    for name, levels in codebooks.items():
        parametrize.register_parametrization(layers[name], "weight", _NearestLevel(levels.to(layers[name].weight.device)))


def _detach_(layers: dict[str, CompressibleLayer], *, keep_quantized: bool) -> None:
    """Remove the codebook parametrizations, leaving the quantized weights or the full-precision ones."""
    for name in layers:
        if parametrize.is_parametrized(layers[name], "weight"):
            parametrize.remove_parametrizations(layers[name], "weight", leave_parametrized=keep_quantized)


def _nonzero_share(values: dict[str, torch.Tensor], where: dict[str, torch.Tensor]) -> float:
    """Share of the positions selected by ``where`` whose value is non-zero, over all layers."""
    selected = sum(int(where[name].sum()) for name in values)
    nonzero = sum(int(torch.count_nonzero(values[name][where[name]])) for name in values)
    return nonzero / selected if selected else 0.0


def _val(model: nn.Module, run: NaiveRun) -> float:
    return evaluate(model, run.splits.val, device=run.device)


NaivePipeline = Callable[[nn.Module, Plan, NaiveRun], NaiveOutcome]


class NaiveStrategy(Strategy):
    """A naive pipeline on the best uniform plan, packed at the plan's sparsity and bits with a k-means
    codebook of the naive model's own levels (where it can keep them). A baseline of ``compare``: ``search --mode``
    does not offer it."""

    pipeline: NaivePipeline
    offered_by_search = False

    def run(self, context: SearchContext) -> SearchOutcome:
        plan = uniform_plan(context)
        setting = next(iter(plan.layers.values()))
        context.log(f"plan: every layer at sparsity {setting.sparsity:.3f} and {setting.bits} bits")
        return plan_trial(context, plan, strategy=self.name, train=self.train)

    def train(self, model: nn.Module, plan: Plan, context: SearchContext) -> tuple[Plan, dict[str, object]]:
        settings = context.settings
        run = NaiveRun(context.splits, context.device, settings.final_epochs, lr=settings.lr,
                       batch_size=settings.batch_size, seed=settings.seed, on_step=context.interrupt.check,
                       precision=settings.precision)
        outcome = type(self).pipeline(model, plan, run)
        packing_plan = Plan({name: LayerSetting(setting.sparsity, setting.bits, "kmeans") for name, setting in plan.layers.items()},
                            model=plan.model)
        # no training: attaches the k-means fake quantization and recalibrates BN under it
        finetune_under_plan_(model, packing_plan, context.splits.train, device=context.device, epochs=0, seed=settings.seed)
        return packing_plan, {"failure": outcome.measurements, "stage_val_accuracy": outcome.stage_val_accuracy}


class PruneThenQuantize(NaiveStrategy):
    name = "prune-then-quantize"
    summary = ("magnitude pruning + retraining, then min-max linear quantization of the whole tensor (no code kept "
               "for zero), then QAT")
    hyperparameters = ("target size", "pruning retraining epochs", "QAT epochs", "learning rate")
    pipeline = staticmethod(prune_then_quantize_)


class QuantizeThenPrune(NaiveStrategy):
    name = "quantize-then-prune"
    summary = ("QAT with every weight kept, then magnitude pruning of the quantized weights, then retraining "
               "without a full-precision copy")
    hyperparameters = ("target size", "QAT epochs", "pruning retraining epochs", "learning rate")
    pipeline = staticmethod(quantize_then_prune_)
