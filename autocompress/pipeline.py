"""A plan applied to a model: fine-tune under it, recalibrate BN, harden, measure, pack.

These are the steps every command and every search trial shares; each takes
its device, seed and data explicitly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autocompress.compress import QuantizedWeight, attach_fake_quant_, detach_fake_quant_, harden_, recalibrate_bn_
from autocompress.data import DataSplits, DeviceLoader, TensorSet
from autocompress.engine import Distillation, EpochCallback, StepCallback, TrainResult, evaluate, train
from autocompress.pack import SizeReport, size_of_quantized, write_packed
from autocompress.plan import Plan

BN_RECALIBRATION_BATCHES = 40
BN_RECALIBRATION_BATCH_SIZE = 128


@dataclass
class CompressedModel:
    """A hardened model (ordinary dense weights, exactly what the packed file holds) and its numbers."""

    model: nn.Module
    plan: Plan
    quantized: dict[str, QuantizedWeight]
    size: SizeReport
    model_spec: str
    num_classes: int
    val_accuracy: float | None = None
    test_accuracy: float | None = None

    def write(self, path: str | Path) -> SizeReport:
        """Write the packed file; its size is ``self.size.total``."""
        return write_packed(path, self.model, self.quantized, model_spec=self.model_spec, num_classes=self.num_classes)


def finetune_under_plan_(
    model: nn.Module,
    plan: Plan,
    train_set: TensorSet,
    *,
    device: torch.device,
    epochs: float,
    lr: float = 0.01,
    batch_size: int = 128,
    seed: int = 0,
    val_set: TensorSet | None = None,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
    on_step: StepCallback | None = None,
    masks: dict[str, torch.Tensor] | None = None,
    distillation: Distillation | None = None,
    checkpoint_path: Path | None = None,
    stop_after_epochs: int | None = None,
    precision: str = "auto",
    recalibrate: bool = True,
) -> TrainResult | None:
    """In-parallel pruning-quantization fine-tuning, then BN recalibration (unless ``recalibrate`` is False), in place.

    The model leaves with its full-precision weights (fake quantization
    detached): hardening them under ``plan`` gives the compressed model.
    ``masks`` fixes the sparsity pattern of those layers (see ``attach_fake_quant_``);
    without it each step re-selects the largest weights. ``distillation`` makes the
    fine-tuning learn from a teacher's soft outputs as well as the labels. ``checkpoint_path``
    keeps the training state after every epoch, and a run that finds its own state there resumes
    it (see :func:`~autocompress.engine.train`); ``stop_after_epochs`` stops the schedule part-way
    (the fine-tune of a race, which the winner resumes); ``precision`` is the steps' number format (see
    :func:`~autocompress.engine.train`).
    """
    attach_fake_quant_(model, plan, masks)
    try:
        result = None
        if epochs > 0:
            result = train(
                model,
                train_set,
                device=device,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                seed=seed,
                val_set=val_set,
                progress=progress,
                on_epoch_end=on_epoch_end,
                on_step=on_step,
                distillation=distillation,
                checkpoint_path=checkpoint_path,
                stop_after_epochs=stop_after_epochs,
                precision=precision,
            )
        if recalibrate:
            recalibrate_bn(model, train_set, device=device, seed=seed)
    finally:
        detach_fake_quant_(model)
    return result


def recalibrate_bn(model: nn.Module, train_set: TensorSet, *, device: torch.device, seed: int) -> int:
    """Re-estimate BN statistics on augmented training batches (the distribution BN was trained on)."""
    model.to(device)
    loader = DeviceLoader(
        train_set,
        batch_size=BN_RECALIBRATION_BATCH_SIZE,
        device=device,
        augment=True,
        shuffle=True,
        seed=seed,
        drop_last=False,
    )
    return recalibrate_bn_(model, loader.iter_epoch(0), num_batches=BN_RECALIBRATION_BATCHES)


def harden_and_measure(
    model: nn.Module,
    plan: Plan,
    *,
    model_spec: str,
    num_classes: int,
    device: torch.device,
    splits: DataSplits | None = None,
    measure_test: bool = False,
) -> CompressedModel:
    """Harden a copy of ``model`` and measure its exact packed size and accuracy."""
    hardened = copy.deepcopy(model)
    quantized = harden_(hardened, plan)
    size = size_of_quantized(hardened, quantized, model_spec=model_spec)
    result = CompressedModel(hardened, plan, quantized, size, model_spec, num_classes)
    if splits is not None:
        result.val_accuracy = evaluate(hardened, splits.val, device=device)
        if measure_test:
            result.test_accuracy = evaluate(hardened, splits.test, device=device)
    return result
