"""Batch-norm statistics recalibration after the weights have changed."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize


def recalibrate_bn_(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, num_batches: int) -> int:
    """Re-estimate every BN's running mean/variance as an exact average over ``num_batches``.

    ``batches`` yields (images, labels) already on the model's device; the
    images should not be augmented. Returns the number of batches used. The
    model is left in eval mode.
    """
    norms = [module for module in model.modules() if isinstance(module, _BatchNorm) and module.track_running_stats]
    if not norms:
        return 0
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average = exact mean over the batches seen
    used = 0
    model.train()
    with torch.no_grad(), parametrize.cached():
        for images, _ in batches:
            if used >= num_batches:
                break
            model(images)
            used += 1
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()
    return used
