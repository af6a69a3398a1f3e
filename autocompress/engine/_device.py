"""Device choice and the CUDA-only speed settings (bf16 autocast, channels-last)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from autocompress.errors import AutocompressError


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise AutocompressError(
                f"device {spec!r} was requested but CUDA is not available here "
                "(no GPU or a CPU-only torch build); use --device cpu or --device auto"
            )
        device = torch.device(text)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AutocompressError(
                f"device {spec!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return device
    raise AutocompressError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


def uses_fast_path(device: torch.device) -> bool:
    """bf16 autocast and channels-last are used on CUDA only."""
    return device.type == "cuda"


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on CUDA, nothing elsewhere."""
    if uses_fast_path(device):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` (in place), channels-last on CUDA; returns it."""
    if uses_fast_path(device):
        # Module.to accepts device and memory_format together; torch's overload stubs list them apart
        return model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model.to(device=device)


@contextlib.contextmanager
def mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put ``model`` in train or eval mode for the block, then restore what it was."""
    was_training = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)
