"""Magnitude masks and the three weight quantizers, all as tensor operations.

Every quantizer turns a weight tensor into integer *codes* of the same shape
(0 means zero, 1..n_levels a non-zero level) and a small table of fp16 numbers
(a codebook of levels, or per-output-channel scales). Kept weights never get
code 0 and pruned weights always do, so quantization cannot change which
weights are zero. Dequantization is one function shared by the in-memory model
and the packed-file reader, so both give bit-identical weights.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from autocompress.compress._layers import kept_count
from autocompress.plan import LayerSetting

_FP16_TINY = 6e-8  # smallest positive fp16 (subnormal): stands in for a level that would round to 0
_FP16_MAX = 65504.0
KMEANS_SAMPLE = 16_384  # weights the scikit-learn fit sees per layer; every weight is then assigned


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
    if setting.quantizer == "uniform":
        return 2 * uniform_grid_max(setting.bits)
    full = 2**setting.bits - 1
    return min(full, n_kept) if setting.quantizer == "kmeans" else full


def uniform_grid_max(bits: int) -> int:
    """Largest integer magnitude of the symmetric grid: int-b is [-(2^(b-1)-1), 2^(b-1)-1]; 1 bit is ±1."""
    return max(1, 2 ** (bits - 1) - 1)


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
    """Prune to the setting's sparsity by magnitude, then quantize the kept weights."""
    weight = weight.detach().float()
    n_kept = kept_count(weight.numel(), setting.sparsity)
    mask = magnitude_mask(weight, n_kept)
    if setting.quantizer == "clipq":
        codes, table = _clipq(weight, mask, n_levels_for(setting, n_kept))
    elif setting.quantizer == "uniform":
        codes, table = _uniform(weight, mask, uniform_grid_max(setting.bits))
    else:
        codes, table = _kmeans(weight, mask, n_levels_for(setting, n_kept), kmeans_init)
    return QuantizedWeight(codes=codes, table=table, quantizer=setting.quantizer, bits=setting.bits, n_levels=n_levels_for(setting, n_kept))


def dequantize(quantized: QuantizedWeight) -> torch.Tensor:
    """The float32 weight the codes stand for (pruned positions exactly 0)."""
    table = quantized.table.float()
    codes = quantized.codes
    if quantized.quantizer == "uniform":
        grid = uniform_grid(uniform_grid_max(quantized.bits), device=codes.device)
        scales = table.view(-1, *([1] * (codes.dim() - 1)))
        return grid[codes] * scales
    levels = torch.cat([torch.zeros(1, device=codes.device), table])
    return levels[codes]


def uniform_grid(grid_max: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Integer value of each uniform code: [0, 1..Q, -1..-Q]."""
    positive = torch.arange(1, grid_max + 1, dtype=torch.float32, device=device)
    return torch.cat([torch.zeros(1, device=device), positive, -positive])


def _to_fp16_levels(values: torch.Tensor) -> torch.Tensor:
    """Round to fp16, never to zero (a kept weight must stay non-zero)."""
    clamped = values.clamp(-_FP16_MAX, _FP16_MAX)
    rounded = clamped.half()
    tiny = torch.full_like(rounded, _FP16_TINY)
    return torch.where(rounded == 0, tiny, rounded)


def _clipq(weight: torch.Tensor, mask: torch.Tensor, n_levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-Q: split the kept weights' range into ``n_levels`` equal intervals; each takes its mean."""
    kept = weight[mask]
    low, high = kept.min(), kept.max()
    edges = torch.linspace(0.0, 1.0, n_levels + 1, device=weight.device) * (high - low) + low
    interval = torch.bucketize(kept, edges[1:-1]).clamp_(max=n_levels - 1)
    means = _interval_means(kept, interval, n_levels, fallback=(edges[:-1] + edges[1:]) / 2)
    codes = torch.zeros(weight.shape, dtype=torch.int64, device=weight.device)
    codes[mask] = interval + 1
    return codes, _to_fp16_levels(means)


def _interval_means(values: torch.Tensor, index: torch.Tensor, n_bins: int, fallback: torch.Tensor) -> torch.Tensor:
    sums = torch.zeros(n_bins, dtype=torch.float64, device=values.device).index_add_(0, index, values.double())
    counts = torch.bincount(index, minlength=n_bins).double()
    return torch.where(counts > 0, sums / counts.clamp(min=1), fallback.double()).float()


def _uniform(weight: torch.Tensor, mask: torch.Tensor, grid_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric integer grid with one fp16 scale per output channel; kept weights stay at |q| ≥ 1."""
    rows = weight.reshape(weight.shape[0], -1)
    kept_rows = mask.reshape(weight.shape[0], -1)
    magnitudes = rows.abs() * kept_rows
    if grid_max == 1:  # binary/ternary: the mean magnitude minimises the error (XNOR-Net)
        scales = magnitudes.sum(1) / kept_rows.sum(1).clamp(min=1)
    else:
        scales = magnitudes.amax(1) / grid_max
    scales = torch.where(kept_rows.any(1), scales, torch.ones_like(scales))
    scales16 = _to_fp16_levels(scales)
    level = torch.round(rows.abs() / scales16.float().unsqueeze(1)).clamp_(1, grid_max).long()
    negative = rows < 0
    codes = torch.where(negative, level + grid_max, level) * kept_rows
    return codes.view(weight.shape), scales16


def _kmeans(
    weight: torch.Tensor, mask: torch.Tensor, n_levels: int, init: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A per-layer codebook: scikit-learn k-means (linear init) on a sample, then one full assignment."""
    kept = weight[mask]
    centroids = init.float().to(weight.device) if init is not None else kmeans_centroids(kept, n_levels)
    centroids, _ = torch.sort(centroids)
    assignment = _nearest_level(kept, centroids)
    means = _interval_means(kept, assignment, n_levels, fallback=centroids)
    means, _ = torch.sort(means)
    assignment = _nearest_level(kept, means)
    codes = torch.zeros(weight.shape, dtype=torch.int64, device=weight.device)
    codes[mask] = assignment + 1
    return codes, _to_fp16_levels(means)


def _nearest_level(values: torch.Tensor, sorted_levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level for each value (levels sorted ascending)."""
    if sorted_levels.numel() == 1:
        return torch.zeros(values.shape, dtype=torch.int64, device=values.device)
    midpoints = (sorted_levels[1:] + sorted_levels[:-1]) / 2
    return torch.bucketize(values, midpoints)


def kmeans_centroids(kept: torch.Tensor, n_levels: int) -> torch.Tensor:
    """``n_levels`` k-means centroids of ``kept`` (1-D values): scikit-learn, linear init, on an even sample."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    values = kept.detach().cpu().double().numpy()
    if values.size > KMEANS_SAMPLE:  # deterministic, evenly spread sample of the sorted weights
        values = np.sort(values)[np.linspace(0, values.size - 1, KMEANS_SAMPLE).astype(np.int64)]
    init = np.linspace(values.min(), values.max(), n_levels).reshape(-1, 1)
    # One thread: scikit-learn's OpenMP runtime and torch's fight over the cores otherwise (10x slower here).
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")  # fewer distinct values than clusters: duplicates are harmless
        fitted = KMeans(n_clusters=n_levels, init=init, n_init=1, max_iter=50, random_state=0).fit(values.reshape(-1, 1))
    return torch.from_numpy(fitted.cluster_centers_.reshape(-1)).float().to(kept.device)
