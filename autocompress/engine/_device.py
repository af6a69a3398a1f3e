"""Device choice and the speed settings: bf16 autocast and channels-last, on CUDA by default and on a CPU on request."""

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


PRECISIONS = ("auto", "fp32", "bf16")
"""Number formats of training steps: ``auto`` is bf16 on CUDA and fp32 elsewhere."""


def uses_fast_path(device: torch.device) -> bool:
    """Evaluation uses bf16 autocast and channels-last on CUDA only (a CPU evaluates in fp32)."""
    return device.type == "cuda"


def trains_in_bf16(device: torch.device, precision: str) -> bool:
    """Whether training steps on ``device`` run under bf16 autocast with channels-last tensors.

    ``auto`` does so on CUDA only, as evaluation does. ``bf16`` does so on any device: on a CPU with
    native bf16 instructions (AVX512-BF16 or AMX) a ResNet step is then about 1.8x faster
    (``benchmarks/precision_ab.py``); on one without them it is slower. Weights, gradients and
    optimizer state stay fp32 either way."""
    if precision not in PRECISIONS:
        raise AutocompressError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and uses_fast_path(device))


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively (CUDA: compute capability 8 or later; CPU: oneDNN's check)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast_for(device: torch.device, bf16: bool | None = None) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast when ``bf16`` (default: on CUDA), nothing otherwise."""
    if uses_fast_path(device) if bf16 is None else bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool | None = None) -> nn.Module:
    """Move ``model`` to ``device`` (in place) and return it: channels-last when ``channels_last`` is True, in the
    default memory format when it is False; by default channels-last on CUDA and in its own format elsewhere."""
    if channels_last or (channels_last is None and uses_fast_path(device)):
        # Module.to accepts device and memory_format together; torch's overload stubs list them apart
        return model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    if channels_last is False:
        return model.to(device=device, memory_format=torch.contiguous_format)  # type: ignore[call-overload]
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
