"""Training, fine-tuning and evaluation loops (device, bf16 autocast where native, progress bars)."""

from __future__ import annotations

from autocompress.engine._device import PRECISIONS, native_bf16, resolve_device, resolved_precision
from autocompress.engine._distill import Distillation, distillation_problem
from autocompress.engine._efficiency import BitOps, count_bitops, measure_latency
from autocompress.engine._evaluate import evaluate, logits_of, predict
from autocompress.engine._train import EpochCallback, Penalty, StepCallback, TrainResult, train

__all__ = [
    "PRECISIONS",
    "BitOps",
    "Distillation",
    "EpochCallback",
    "Penalty",
    "StepCallback",
    "TrainResult",
    "count_bitops",
    "distillation_problem",
    "evaluate",
    "logits_of",
    "measure_latency",
    "native_bf16",
    "predict",
    "resolve_device",
    "resolved_precision",
    "train",
]
