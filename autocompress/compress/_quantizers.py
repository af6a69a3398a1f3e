"""Magnitude masks, and quantization of a layer under its plan setting.

Every quantizer turns a weight tensor into integer *codes* of the same shape
(0 means zero, 1..n_levels a non-zero level) and a small table of fp16 numbers
(a codebook of levels, or per-output-channel scales). Kept weights never get
code 0 and pruned weights always do, so quantization cannot change which
weights are zero. Dequantization is one function shared by the in-memory model
and the packed-file reader, so both give bit-identical weights.

The quantizers themselves are the entries of :mod:`autocompress.quantizers`;
this module prunes by magnitude and dispatches to the entry the setting names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autocompress.compress._layers import kept_count
from autocompress.plan import LayerSetting
from autocompress.quantizers import KMEANS_SAMPLE, get_quantizer, kmeans_centroids, uniform_grid, uniform_grid_max

__all__ = [
    "KMEANS_SAMPLE",
    "QuantizedWeight",
    "dequantize",
    "kmeans_centroids",
    "magnitude_mask",
    "magnitude_ranks",
    "n_levels_for",
    "quantize",
    "uniform_grid",
    "uniform_grid_max",
]


@dataclass(frozen=True)
class QuantizedWeight:
    """A compressed weight: codes (int64, weight's shape) plus its fp16 table."""

    codes: torch.Tensor
    table: torch.Tensor
    quantizer: str
    bits: int
    n_levels: int

    @property
    def n_kept(self) -> int:
        return int(torch.count_nonzero(self.codes))


def n_levels_for(setting: LayerSetting, n_kept: int) -> int:
    """Number of non-zero levels a quantizer uses; a pure function of the plan and the counts."""
    return get_quantizer(setting.quantizer).n_levels(setting.bits, n_kept)


def magnitude_mask(weight: torch.Tensor, n_kept: int) -> torch.Tensor:
    """Boolean mask of the ``n_kept`` largest-magnitude weights (exactly that many).

    Ties at the threshold go to the lower flat index, so the mask is a function
    of the weights alone (``rank < n_kept`` with :func:`magnitude_ranks` gives the
    same mask). One ``kthvalue`` per call, no sort and no host synchronisation.
    """
    flat = weight.detach().reshape(-1).abs().float()
    numel = flat.numel()
    if n_kept >= numel:
        return torch.ones(weight.shape, dtype=torch.bool, device=weight.device)
    threshold = torch.kthvalue(flat, numel - n_kept + 1).values
    above = flat > threshold
    ties = flat == threshold
    places_for_ties = n_kept - above.sum()  # a tensor: no host sync, so GPU steps do not stall here
    first_ties = ties & (torch.cumsum(ties, 0) <= places_for_ties)  # more ties than places: lower index wins
    return (above | first_ties).view_as(weight)


def magnitude_ranks(weight: torch.Tensor) -> torch.Tensor:
    """Each weight's place (0 = largest magnitude) in the order :func:`magnitude_mask` keeps them.

    ``magnitude_ranks(w) < k`` equals ``magnitude_mask(w, k)`` for every ``k``; one
    sort answers all sparsities, which is what repeated size accounting needs.
    """
    flat = weight.detach().reshape(-1).abs().float()
    order = torch.sort(flat, descending=True, stable=True).indices
    ranks = torch.empty(flat.numel(), dtype=torch.int32, device=weight.device)
    ranks[order] = torch.arange(flat.numel(), dtype=torch.int32, device=weight.device)
    return ranks.view_as(weight)


def quantize(weight: torch.Tensor, setting: LayerSetting, *, kmeans_init: torch.Tensor | None = None) -> QuantizedWeight:
    """Prune to the setting's sparsity by magnitude, then quantize the kept weights.

    ``kmeans_init`` is the warm start the quantizer's ``next_init`` gave for the
    previous call (only k-means has one; the others ignore it).
    """
    weight = weight.detach().float()
    n_kept = kept_count(weight.numel(), setting.sparsity)
    mask = magnitude_mask(weight, n_kept)
    entry = get_quantizer(setting.quantizer)
    codes, table = entry.quantize(weight, mask, setting.bits, init=kmeans_init)
    return QuantizedWeight(
        codes=codes, table=table, quantizer=setting.quantizer, bits=setting.bits, n_levels=entry.n_levels(setting.bits, n_kept)
    )


def dequantize(quantized: QuantizedWeight) -> torch.Tensor:
    """The float32 weight the codes stand for (pruned positions exactly 0)."""
    return get_quantizer(quantized.quantizer).dequantize(quantized.codes, quantized.table, quantized.bits)
