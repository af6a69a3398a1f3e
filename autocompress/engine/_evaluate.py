"""Batched inference: predicted labels and top-1 accuracy."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from autocompress.data import TensorSet
from autocompress.engine._device import autocast_for, mode, prepare_model, uses_fast_path
from autocompress.errors import DataError

EVAL_BATCH_SIZE = 250  # on a 2-core CPU, 250 ran ~1.5x faster than 1000 (less allocation; benchmarks/README.md)


def predict(
    model: nn.Module,
    images: Tensor | TensorSet,
    *,
    device: torch.device | str,
    batch_size: int = EVAL_BATCH_SIZE,
    progress: bool = False,
) -> Tensor:
    """Argmax labels (int64, on CPU) for uint8 images ``[N, 3, H, W]`` or a :class:`TensorSet`.

    The model runs in eval mode under ``torch.inference_mode`` (its previous mode is restored)
    and is moved to ``device``; uint8 images are scaled to [0, 1], float images are used as they are.
    """
    device = torch.device(device)
    pixels = images.images if isinstance(images, TensorSet) else images
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    prepare_model(model, device)
    memory_format = torch.channels_last if uses_fast_path(device) else torch.contiguous_format
    pixels = pixels.to(device)
    starts = range(0, len(pixels), batch_size)
    predictions: list[Tensor] = []
    with mode(model, training=False), torch.inference_mode(), autocast_for(device):
        for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress, leave=False):
            batch = _as_float(pixels[start : start + batch_size]).contiguous(memory_format=memory_format)
            predictions.append(model(batch).argmax(dim=1))
    if not predictions:
        return torch.empty(0, dtype=torch.int64)
    return torch.cat(predictions).cpu()


def logits_of(
    model: nn.Module,
    images: Tensor | TensorSet,
    *,
    device: torch.device | str,
    batch_size: int = EVAL_BATCH_SIZE,
) -> Tensor:
    """The model's float32 logits ``[N, classes]`` (on CPU) for uint8 images or a :class:`TensorSet`, in eval mode."""
    device = torch.device(device)
    pixels = images.images if isinstance(images, TensorSet) else images
    prepare_model(model, device)
    memory_format = torch.channels_last if uses_fast_path(device) else torch.contiguous_format
    pixels = pixels.to(device)
    outputs: list[Tensor] = []
    with mode(model, training=False), torch.inference_mode(), autocast_for(device):
        for start in range(0, len(pixels), batch_size):
            batch = _as_float(pixels[start : start + batch_size]).contiguous(memory_format=memory_format)
            outputs.append(model(batch).float())
    return torch.cat(outputs).cpu() if outputs else torch.empty(0)


def evaluate(
    model: nn.Module,
    tensor_set: TensorSet,
    *,
    device: torch.device | str,
    batch_size: int = EVAL_BATCH_SIZE,
    progress: bool = False,
) -> float:
    """Top-1 accuracy of ``model`` on ``tensor_set``, in [0, 1]."""
    if len(tensor_set) == 0:
        raise DataError("cannot evaluate on an empty image set; check the split sizes (e.g. val_size)")
    predicted = predict(model, tensor_set, device=device, batch_size=batch_size, progress=progress)
    return int((predicted == tensor_set.labels.cpu()).sum()) / len(tensor_set)


def _as_float(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()
