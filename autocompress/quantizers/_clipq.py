"""CLIP-Q: equal intervals over the kept weights' range, each represented by its mean."""

from __future__ import annotations

import torch

from autocompress.quantizers._base import Quantizer
from autocompress.quantizers._levels import interval_means, to_fp16_levels


class ClipQQuantizer(Quantizer):
    """Split the kept weights' range into ``2**bits - 1`` equal intervals; each level is its interval's mean."""

    name = "clipq"
    file_id = 0

    def n_levels(self, bits: int, n_kept: int) -> int:
        return int(2**bits) - 1

    def quantize(
        self, weight: torch.Tensor, mask: torch.Tensor, bits: int, *, init: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weight = weight.detach().float()
        kept = weight[mask]
        n_levels = self.n_levels(bits, kept.numel())
        low, high = kept.min(), kept.max()
        edges = torch.linspace(0.0, 1.0, n_levels + 1, device=weight.device) * (high - low) + low
        interval = torch.bucketize(kept, edges[1:-1]).clamp_(max=n_levels - 1)
        means = interval_means(kept, interval, n_levels, fallback=(edges[:-1] + edges[1:]) / 2)
        codes = torch.zeros(weight.shape, dtype=torch.int64, device=weight.device)
        codes[mask] = interval + 1
        return codes, to_fp16_levels(means)
