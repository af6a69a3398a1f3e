"""In-parallel pruning-quantization for training (CLIP-Q style).

The full-precision weight stays the trainable parameter. At every forward the
mask and the quantization are recomputed from it, the layer computes with the
compressed weight, and the gradient passes straight through to the
full-precision weight (including pruned ones, which may win their place back
before the plan is made hard).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocompress.compress._layers import compressible_layers
from autocompress.compress._quantizers import dequantize, quantize
from autocompress.plan import LayerSetting, Plan
from autocompress.quantizers import get_quantizer


class FakeQuantize(nn.Module):
    """A weight parametrization: compressed values forward, identity gradient backward."""

    def __init__(self, setting: LayerSetting, mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.setting = setting
        self.warm_start: torch.Tensor | None = None  # the quantizer's next_init (k-means: last levels, one Lloyd step per forward)
        if mask is not None:
            self.register_buffer("mask", mask.detach().to(torch.bool), persistent=False)
        else:
            self.mask = None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:  # a fixed sparsity pattern: pruned weights compute as 0 and get no gradient
            weight = weight * self.mask
        with torch.no_grad():
            quantized = quantize(weight, self.setting, kmeans_init=self.warm_start)
            self.warm_start = get_quantizer(self.setting.quantizer).next_init(quantized.table)
            hard = dequantize(quantized).to(weight.dtype)
        return weight + (hard - weight).detach()


def attach_fake_quant_(model: nn.Module, plan: Plan, masks: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Parametrize every plan layer's weight with :class:`FakeQuantize` (in place).

    With ``masks`` (layer name -> boolean tensor keeping exactly the plan's count),
    those layers' sparsity patterns are fixed: their pruned weights are set to zero
    now and can never come back, so hardening after training keeps the same pattern
    (and the same index bytes)."""
    layers = compressible_layers(model)
    plan.check_layers(layers)
    masks = masks or {}
    for name, setting in plan.layers.items():
        module = layers[name]
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        mask = masks.get(name)
        if mask is not None:
            with torch.no_grad():
                module.weight.mul_(mask.to(module.weight.device))
        parametrize.register_parametrization(module, "weight", FakeQuantize(setting, mask))
    return model


def detach_fake_quant_(model: nn.Module) -> nn.Module:
    """Remove the parametrizations, leaving the full-precision weights (in place)."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    return model
