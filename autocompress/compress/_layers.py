"""Which layers a plan may name, and how many weights a setting keeps."""

from __future__ import annotations

from typing import TypeAlias

import torch
from torch import nn

CompressibleLayer: TypeAlias = nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear
"""A layer a plan may name: its ``weight`` is a tensor (a parametrized one included)."""

COMPRESSIBLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def compressible_layers(model: nn.Module) -> dict[str, CompressibleLayer]:
    """Conv and linear layers in ``named_modules`` order, keyed by qualified name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, COMPRESSIBLE_TYPES)}


def layer_weight_counts(model: nn.Module) -> dict[str, int]:
    """Number of weights of each compressible layer."""
    return {name: full_precision_weight(module).numel() for name, module in compressible_layers(model).items()}


def kept_count(numel: int, sparsity: float) -> int:
    """Weights a layer keeps at ``sparsity``: ``numel - round(sparsity * numel)``, at least one."""
    pruned = round(sparsity * numel)
    return max(1, numel - pruned)


def full_precision_weight(module: CompressibleLayer) -> torch.Tensor:
    """The full-precision weight, also when a fake-quant parametrization is attached."""
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return parametrizations["weight"].original
    return module.weight
