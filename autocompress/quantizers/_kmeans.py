"""A per-layer k-means codebook (scikit-learn, imported only when a fit is needed)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from autocompress.quantizers._base import Quantizer
from autocompress.quantizers._levels import interval_means, nearest_level, to_fp16_levels

KMEANS_SAMPLE = 16_384  # weights the scikit-learn fit sees per layer; every weight is then assigned


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


class KMeansQuantizer(Quantizer):
    """``min(2**bits - 1, n_kept)`` levels: k-means centroids, then one Lloyd step over every kept weight.

    Without ``init`` the centroids come from :func:`kmeans_centroids`; with it
    (the previous step's levels, from :meth:`next_init`) that fit is skipped, so
    fake-quant training does one cheap Lloyd step per forward.
    """

    name = "kmeans"
    file_id = 2

    def n_levels(self, bits: int, n_kept: int) -> int:
        return min(int(2**bits) - 1, n_kept)

    def quantize(
        self, weight: torch.Tensor, mask: torch.Tensor, bits: int, *, init: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weight = weight.detach().float()
        kept = weight[mask]
        n_levels = self.n_levels(bits, kept.numel())
        centroids = init.float().to(weight.device) if init is not None else kmeans_centroids(kept, n_levels)
        centroids, _ = torch.sort(centroids)
        assignment = nearest_level(kept, centroids)
        means = interval_means(kept, assignment, n_levels, fallback=centroids)
        means, _ = torch.sort(means)
        assignment = nearest_level(kept, means)
        codes = torch.zeros(weight.shape, dtype=torch.int64, device=weight.device)
        codes[mask] = assignment + 1
        return codes, to_fp16_levels(means)

    def next_init(self, table: torch.Tensor) -> torch.Tensor | None:
        return table.float()
