"""Training, fine-tuning and evaluation loops (device, AMP on CUDA, progress bars)."""

from __future__ import annotations

from autocompress.engine._device import resolve_device
from autocompress.engine._evaluate import evaluate, predict
from autocompress.engine._train import EpochCallback, StepCallback, TrainResult, train

__all__ = ["EpochCallback", "StepCallback", "TrainResult", "evaluate", "predict", "resolve_device", "train"]
