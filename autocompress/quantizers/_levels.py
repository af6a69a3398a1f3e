"""Helpers the codebook quantizers share: fp16 levels, interval means, nearest level."""

from __future__ import annotations

import torch

_FP16_TINY = 6e-8  # smallest positive fp16 (subnormal): stands in for a level that would round to 0
_FP16_MAX = 65504.0


def to_fp16_levels(values: torch.Tensor) -> torch.Tensor:
    """Round to fp16, never to zero (a kept weight must stay non-zero)."""
    clamped = values.clamp(-_FP16_MAX, _FP16_MAX)
    rounded = clamped.half()
    tiny = torch.full_like(rounded, _FP16_TINY)
    return torch.where(rounded == 0, tiny, rounded)


def interval_means(
    values: torch.Tensor, index: torch.Tensor, n_bins: int, fallback: torch.Tensor, *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of the values in each bin (float64 sums), ``fallback`` for an empty bin.

    With ``mask`` (same shape as ``values``), only the masked values count. This gives the same
    result as compacting them first (``values[mask]``) without that compaction, which on a GPU
    waits for the device to learn the output's length (a host synchronisation every call)."""
    values, index = values.reshape(-1).double(), index.reshape(-1)
    counted = torch.ones_like(values) if mask is None else mask.reshape(-1).double()
    kept = values if mask is None else torch.where(mask.reshape(-1), values, 0.0)  # a skipped value adds exactly 0.0
    sums = torch.zeros(n_bins, dtype=torch.float64, device=values.device).index_add_(0, index, kept)
    counts = torch.zeros(n_bins, dtype=torch.float64, device=values.device).index_add_(0, index, counted)
    return torch.where(counts > 0, sums / counts.clamp(min=1), fallback.double()).float()


def nearest_level(values: torch.Tensor, sorted_levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level for each value (levels sorted ascending)."""
    if sorted_levels.numel() == 1:
        return torch.zeros(values.shape, dtype=torch.int64, device=values.device)
    midpoints = (sorted_levels[1:] + sorted_levels[:-1]) / 2
    return torch.bucketize(values, midpoints)
