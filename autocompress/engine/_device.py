"""Device choice and the speed settings: bf16 autocast and channels-last, by default on CUDA and on CPUs with
native bf16 instructions."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from autocompress.errors import AutocompressError
from autocompress.settings import PRECISIONS


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


CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""Linux ``/proc/cpuinfo`` flags of x86 instructions that compute in bf16 (oneDNN emulates it without them, slowly)."""


def uses_fast_path(device: torch.device) -> bool:
    """Evaluation uses bf16 autocast and channels-last on CUDA only (a CPU evaluates in fp32)."""
    return device.type == "cuda"


def trains_in_bf16(device: torch.device, precision: str) -> bool:
    """Whether training steps on ``device`` run under bf16 autocast with channels-last tensors.

    ``auto`` does so on CUDA, and on a CPU with native bf16 instructions (:func:`native_bf16`), where a
    ResNet step is about 2x faster and the fine-tuned accuracy no lower (``benchmarks/precision_ab.py``).
    ``bf16`` does so on any device (on a CPU without those instructions it is slower); ``fp32`` never.
    Weights, gradients and optimizer state stay fp32 either way."""
    if precision not in PRECISIONS:
        raise AutocompressError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return uses_fast_path(device) or native_bf16(device)
    return precision == "bf16"


def resolved_precision(device: torch.device, precision: str) -> str:
    """What ``precision`` trains in on ``device``: ``"bf16"`` or ``"fp32"``."""
    return "bf16" if trains_in_bf16(device, precision) else "fp32"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively. CUDA: torch's check (compute capability 8 or later). CPU:
    oneDNN's bf16 kernels are available and the CPU has AVX512-BF16 or AMX (read from ``/proc/cpuinfo``; where
    that file is absent, as off Linux, the answer is no)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return _cpu_has_bf16_instructions() and bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


@functools.cache
def _cpu_has_bf16_instructions(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    return cpu_flags_have_bf16(cpuinfo.read_text() if cpuinfo.is_file() else "")


def cpu_flags_have_bf16(cpuinfo_text: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists a bf16 instruction set on a ``flags`` line."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and CPU_BF16_FLAGS & set(value.split()):
            return True
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
