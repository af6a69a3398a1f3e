"""CLIP-Q: equal intervals over the kept weights' range, each represented by its mean."""

from __future__ import annotations

from collections.abc import Sequence

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
        # Masked reductions rather than ``weight[mask]``: the same numbers, and on a GPU no host
        # synchronisation (a boolean index must wait for its length), which fake-quant training pays every step.
        # Contiguous: bucketize would copy a channels-last weight (the GPU path's layout) anyway, with a warning.
        weight = weight.detach().float().contiguous()
        n_levels = self.n_levels(bits, n_kept=0)  # 2**bits - 1 whatever the count kept
        low = torch.where(mask, weight, float("inf")).amin()
        high = torch.where(mask, weight, float("-inf")).amax()
        edges = torch.linspace(0.0, 1.0, n_levels + 1, device=weight.device) * (high - low) + low
        interval = torch.bucketize(weight, edges[1:-1]).clamp_(max=n_levels - 1)
        means = interval_means(weight, interval, n_levels, fallback=(edges[:-1] + edges[1:]) / 2, mask=mask)
        codes = torch.where(mask, interval + 1, 0)
        return codes, to_fp16_levels(means)

    def distortions(self, weight: torch.Tensor, mask: torch.Tensor, bits_choices: Sequence[int]) -> list[float]:
        weight = weight.detach().float()
        dropped = float(weight[~mask].double().pow(2).sum())
        return [dropped + error for error in self.sorted_kept_errors(torch.sort(weight[mask]).values, bits_choices)]

    def sorted_kept_counts(self, ordered: torch.Tensor, bits: int) -> torch.Tensor:
        """The intervals' counts: runs of the sorted kept weights between the edges (as ``quantize`` buckets them)."""
        return torch.diff(self._interval_ends(ordered, self.n_levels(bits, ordered.numel())))

    @staticmethod
    def _interval_ends(ordered: torch.Tensor, n_levels: int) -> torch.Tensor:
        """Where each interval's run of ``ordered`` ends (``n_levels + 1`` positions, from 0 to its length)."""
        low, high = ordered[0], ordered[-1]
        edges = torch.linspace(0.0, 1.0, n_levels + 1, device=ordered.device) * (high - low) + low
        inner = torch.searchsorted(ordered, edges[1:-1], right=True)  # as bucketize puts a value on an edge
        return torch.cat([inner.new_zeros(1), inner, inner.new_full((1,), ordered.numel())])

    def sorted_kept_errors(self, ordered: torch.Tensor, bits_choices: Sequence[int]) -> list[float]:
        """The kept weights' squared errors from the kept weights alone, sorted ascending: the intervals are
        runs of them, and each one's error follows from prefix sums of the values and of their squares."""
        n_kept = ordered.numel()
        values = ordered.double()
        zero = torch.zeros(1, dtype=torch.float64, device=ordered.device)
        sums = torch.cat([zero, torch.cumsum(values, 0)])
        squares = torch.cat([zero, torch.cumsum(values * values, 0)])
        low, high = ordered[0], ordered[-1]
        errors = []
        for bits in bits_choices:
            n_levels = self.n_levels(bits, n_kept)
            edges = torch.linspace(0.0, 1.0, n_levels + 1, device=ordered.device) * (high - low) + low
            ends = self._interval_ends(ordered, n_levels)
            counts = (ends[1:] - ends[:-1]).double()
            interval_sums = sums[ends[1:]] - sums[ends[:-1]]
            interval_squares = squares[ends[1:]] - squares[ends[:-1]]
            means = torch.where(counts > 0, interval_sums / counts.clamp(min=1), ((edges[:-1] + edges[1:]) / 2).double())
            levels = to_fp16_levels(means.float()).double()
            errors.append(float((interval_squares - 2 * levels * interval_sums + counts * levels * levels).sum()))
        return errors


class ClipQFullQuantizer(ClipQQuantizer):
    """CLIP-Q's equal intervals with every one of the ``2**bits`` codes a level: ``2**bits`` intervals.

    CLIP-Q keeps code 0 for the pruned weights, so a ``bits``-wide code has ``2**bits - 1`` levels. A
    pruned layer's packed file marks its zeros in a sparse index (bitmap or gaps) and stores a code for
    each kept weight only, ``bit_width(n_levels)`` bits wide, so there the zero code is paid for and never
    used: at 2 bits CLIP-Q has 3 levels, the middle one straddling zero, where this has 4. At 1 bit this
    is two levels, the means of the kept weights below and above the middle of their range: for a pruned
    layer, ternary weights at one bit per kept weight. A layer kept dense stores ``bits + 1``-bit codes
    (zero included), which the size accounting counts.
    """

    name = "clipq_full"
    file_id = 3

    def n_levels(self, bits: int, n_kept: int) -> int:
        return int(2**bits)
