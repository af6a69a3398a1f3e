"""Training, fine-tuning and evaluation loops (device, bf16 autocast where native, progress bars)."""

from __future__ import annotations

from autocompress.engine._device import autocast_for, native_bf16, prepare_model, resolve_device, resolved_precision
from autocompress.engine._distill import Distillation, distillation_problem
from autocompress.engine._efficiency import BitOps, count_bitops, measure_latency
from autocompress.engine._evaluate import evaluate, logits_of, predict
from autocompress.engine._train import EpochCallback, Penalty, StepCallback, TrainResult, seconds_per_step, train

__all__ = [
    "BitOps",
    "Distillation",
    "EpochCallback",
    "Penalty",
    "StepCallback",
    "TrainResult",
    "autocast_for",
    "count_bitops",
    "distillation_problem",
    "evaluate",
    "logits_of",
    "measure_latency",
    "native_bf16",
    "predict",
    "prepare_model",
    "resolve_device",
    "resolved_precision",
    "seconds_per_step",
    "train",
]
