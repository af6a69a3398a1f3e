"""Hardware efficiency of a (compressed) model: BitOps and measured inference latency.

BitOps follow the usual definition for weight-and-activation quantized nets:
every multiply-accumulate costs ``weight bits x activation bits``, and a
pruned weight costs nothing. The count is taken from a real forward pass
(hooks on every conv and linear layer), so strides, padding and pooling are
what the model actually does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.compress import CompressibleLayer, compressible_layers

FLOAT_BITS = 32


@dataclass(frozen=True)
class BitOps:
    """Per-image operation counts of one model."""

    macs_dense: int  # multiply-accumulates with every weight
    macs_nonzero: int  # with the non-zero weights only
    bitops: int  # sum over layers of non-zero MACs x weight bits x activation bits

    @property
    def bitops_dense_fp32(self) -> int:
        return self.macs_dense * FLOAT_BITS * FLOAT_BITS


def count_bitops(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    weight_bits: Mapping[str, int],
    activation_bits: int = FLOAT_BITS,
) -> BitOps:
    """BitOps of one image of ``input_shape`` (C, H, W) through ``model``.

    ``weight_bits`` names the code width of each compressed layer; a layer it
    does not name counts as float32. The weights are read as they are (a
    hardened or loaded packed model has its pruned weights at exactly 0).
    """
    layers = compressible_layers(model)
    counts: dict[str, tuple[int, int]] = {}

    def hook_for(name: str):  # noqa: ANN202
        def hook(module: CompressibleLayer, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            uses_per_weight = _uses_per_weight(module, output)
            weight = module.weight.detach()
            counts[name] = (weight.numel() * uses_per_weight, int(torch.count_nonzero(weight)) * uses_per_weight)

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers.items()]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.inference_mode():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    dense = sum(macs for macs, _ in counts.values())
    nonzero = sum(macs for _, macs in counts.values())
    bitops = sum(macs * weight_bits.get(name, FLOAT_BITS) * activation_bits for name, (_, macs) in counts.items())
    return BitOps(macs_dense=dense, macs_nonzero=nonzero, bitops=bitops)


def _uses_per_weight(module: nn.Module, output: torch.Tensor) -> int:
    """How many times one weight is multiplied for one image: output positions of a conv, rows of a linear."""
    if isinstance(module, nn.Linear):
        return max(output[0].numel() // module.out_features, 1)
    return output[0, 0].numel()  # conv: one use per output position of its channel


def measure_latency(
    models: Mapping[str, nn.Module],
    input_shape: tuple[int, ...],
    *,
    batch_size: int,
    device: torch.device,
    rounds: int = 5,
    calls_per_round: int = 1,
) -> dict[str, float]:
    """Median seconds of one forward pass of a batch, for several models measured side by side.

    The models take turns within every round (after one untimed warm-up call
    each), so a slow spell of a noisy machine falls on all of them alike.
    """
    batch = torch.randn((batch_size, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    timings: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.to(device).eval()
        _forward(model, batch, device)
    for _ in range(rounds):
        for name, model in models.items():
            started = time.perf_counter()
            for _ in range(calls_per_round):
                _forward(model, batch, device)
            timings[name].append((time.perf_counter() - started) / calls_per_round)
    return {name: statistics.median(values) for name, values in timings.items()}


def _forward(model: nn.Module, batch: torch.Tensor, device: torch.device) -> None:
    with torch.inference_mode():
        model(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
