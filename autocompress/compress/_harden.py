"""Make a plan hard: the exact weights a deployed (packed) model holds.

After :func:`harden_` the model is an ordinary ``nn.Module`` whose state is
exactly what the packed file stores: plan layers hold their dequantized codes,
batch norms are folded into a per-channel fp16 affine (running mean 0), and
the other biases are rounded to fp16. Layers the plan does not name keep their
fp32 weights.
"""

from __future__ import annotations

from typing import TypeGuard

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from autocompress.compress._fakequant import detach_fake_quant_
from autocompress.compress._layers import compressible_layers
from autocompress.compress._quantizers import QuantizedWeight, dequantize, quantize
from autocompress.plan import Plan


def harden_(model: nn.Module, plan: Plan) -> dict[str, QuantizedWeight]:
    """Compress ``model`` in place to its deployable state; return each plan layer's codes."""
    detach_fake_quant_(model)
    layers = compressible_layers(model)
    plan.check_layers(layers)
    quantized: dict[str, QuantizedWeight] = {}
    with torch.no_grad():
        for name, setting in plan.layers.items():
            weight = layers[name].weight
            quantized[name] = quantize(weight, setting)
            weight.copy_(dequantize(quantized[name]).to(weight.dtype))
        round_to_storage_precision_(model)
    return quantized


def is_foldable_batchnorm(module: nn.Module) -> TypeGuard[_BatchNorm]:
    return isinstance(module, _BatchNorm) and module.affine and module.track_running_stats


def folded_running_var(channels: int, eps: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Running variance of a folded BN: with it, BN computes ``x * weight + bias``."""
    return torch.full((channels,), 1.0 - eps, dtype=torch.float32, device=device)


def round_to_storage_precision_(model: nn.Module) -> None:
    """Fold batch norms to an fp16 affine and round non-BN biases to fp16 (in place)."""
    with torch.no_grad():
        for module in model.modules():
            if is_foldable_batchnorm(module):
                _fold_batchnorm_(module)
            elif isinstance(bias := getattr(module, "bias", None), torch.Tensor) and bias.is_floating_point():
                bias.copy_(bias.half().float())


def _fold_batchnorm_(bn: _BatchNorm) -> None:
    assert bn.running_mean is not None and bn.running_var is not None  # foldable: it tracks running stats
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    bn.weight.copy_(scale.half().float())
    bn.bias.copy_(shift.half().float())
    bn.running_mean.zero_()
    bn.running_var.copy_(folded_running_var(bn.num_features, bn.eps, bn.running_var.device))
