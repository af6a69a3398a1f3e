"""Symmetric uniform (integer-grid) quantization with one fp16 scale per output channel."""

from __future__ import annotations

import torch

from autocompress.quantizers._base import Quantizer
from autocompress.quantizers._levels import to_fp16_levels


def uniform_grid_max(bits: int) -> int:
    """Largest integer magnitude of the symmetric grid: int-b is [-(2^(b-1)-1), 2^(b-1)-1]; 1 bit is ±1."""
    return max(1, int(2 ** (bits - 1)) - 1)


def uniform_grid(grid_max: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Integer value of each uniform code: [0, 1..Q, -1..-Q]."""
    positive = torch.arange(1, grid_max + 1, dtype=torch.float32, device=device)
    return torch.cat([torch.zeros(1, device=device), positive, -positive])


class UniformQuantizer(Quantizer):
    """Codes ``1..Q`` are ``+1..+Q`` and ``Q+1..2Q`` are ``-1..-Q`` times the channel's scale (``Q`` = grid max).

    Kept weights stay at ``|q| >= 1``. At 1 bit (``Q = 1``, binary/ternary) the
    scale is the mean kept magnitude (XNOR-Net), otherwise the largest over ``Q``.
    The table holds one scale per output channel, not a codebook.
    """

    name = "uniform"
    file_id = 1

    def n_levels(self, bits: int, n_kept: int) -> int:
        return 2 * uniform_grid_max(bits)

    def table_length(self, n_levels: int, out_channels: int) -> int:
        return out_channels

    def quantize(
        self, weight: torch.Tensor, mask: torch.Tensor, bits: int, *, init: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weight = weight.detach().float()
        grid_max = uniform_grid_max(bits)
        rows = weight.reshape(weight.shape[0], -1)
        kept_rows = mask.reshape(weight.shape[0], -1)
        magnitudes = rows.abs() * kept_rows
        if grid_max == 1:  # binary/ternary: the mean magnitude minimises the error (XNOR-Net)
            scales = magnitudes.sum(1) / kept_rows.sum(1).clamp(min=1)
        else:
            scales = magnitudes.amax(1) / grid_max
        scales = torch.where(kept_rows.any(1), scales, torch.ones_like(scales))
        scales16 = to_fp16_levels(scales)
        level = torch.round(rows.abs() / scales16.float().unsqueeze(1)).clamp_(1, grid_max).long()
        negative = rows < 0
        codes = torch.where(negative, level + grid_max, level) * kept_rows
        return codes.view(weight.shape), scales16

    def dequantize(self, codes: torch.Tensor, table: torch.Tensor, bits: int) -> torch.Tensor:
        grid = uniform_grid(uniform_grid_max(bits), device=codes.device)
        scales = table.float().view(-1, *([1] * (codes.dim() - 1)))
        return grid[codes] * scales
