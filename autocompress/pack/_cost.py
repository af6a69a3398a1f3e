"""Exact byte cost of one compressed layer in format 1, and the choice of its sparse index.

Format 1 (fixed-width codes) is what files written before format 2 hold; it is still read and
written back byte for byte, and Bayesian Bits' gates price their widths with it. Three encodings
of a layer's codes, the cheapest chosen per layer:

* ``dense``: no index; every weight stores a code of ``bit_width(n_levels + 1)``
  bits, zero being code 0.
* ``bitmap``: one bit per weight marks the kept ones; each kept weight stores
  ``bit_width(n_levels)`` bits.
* ``gap``: relative indexing (Deep Compression): for each kept weight, the
  number of zeros before it in a ``g``-bit field; the all-ones field is an
  escape that skips ``2**g - 1`` positions. ``g`` is chosen by exact cost.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import torch

from autocompress.pack._bits import bit_width, packed_length

# format 1, after the kind byte: quantizer u8, bits u8, encoding u8, gap width u8, n_levels u16, n_kept u32
CODES_FIELDS = struct.Struct("<BBBBHI")
# format 2, after the kind byte: quantizer u8, bits u8, frequency precision u8, n_levels u16, n_kept u32,
# mask stream words u32, codes stream words u32
CODED_FIELDS = struct.Struct("<BBBHIII")
GAP_COUNT = struct.Struct("<I")
TABLE_ITEM_BYTES = 2  # fp16
ENCODINGS = ("dense", "bitmap", "gap")
MAX_GAP_WIDTH = 16


@dataclass(frozen=True)
class LayerCost:
    """Bytes of one compressed layer's entry, by part."""

    encoding: str
    gap_width: int
    gap_fields: int
    values: int
    index: int
    codebook: int
    overhead: int

    @property
    def total(self) -> int:
        return self.values + self.index + self.codebook + self.overhead


def zero_runs(kept_flat: torch.Tensor) -> torch.Tensor:
    """Number of pruned weights before each kept weight (since the previous kept one)."""
    positions = torch.nonzero(kept_flat.reshape(-1)).reshape(-1)
    return torch.diff(positions, prepend=positions.new_full((1,), -1)) - 1


def gap_field_count(runs: torch.Tensor, width: int) -> int:
    """Fields the gap encoding at ``width`` bits needs: one per kept weight plus escapes."""
    escape_step = 2**width - 1
    return int(runs.numel() + torch.div(runs, escape_step, rounding_mode="floor").sum().item())


_HISTOGRAM_RUNS = 4096  # runs shorter than this are counted by a histogram; the rare longer ones one by one
_ESCAPE_STEPS = torch.tensor([2**width - 1 for width in range(1, MAX_GAP_WIDTH + 1)], dtype=torch.float64)
# _ESCAPES_PER_RUN[w - 1, r]: escape fields a run of r zeros needs at width w
_ESCAPES_PER_RUN = torch.div(torch.arange(_HISTOGRAM_RUNS, dtype=torch.float64)[None, :], _ESCAPE_STEPS[:, None], rounding_mode="floor")


def gap_field_counts(runs: torch.Tensor) -> list[int]:  # runs may live on any device; 4 KB come back
    """:func:`gap_field_count` for every width 1..``MAX_GAP_WIDTH`` at once (entry ``w - 1``).

    One pass over the runs builds a histogram of the short ones; every width's
    escape count is then one small matrix product, and the few long runs are
    added exactly. Counts stay below 2**53, so the float64 sums are exact.
    """
    runs = runs.reshape(-1)
    histogram = torch.bincount(runs.clamp(max=_HISTOGRAM_RUNS), minlength=_HISTOGRAM_RUNS + 1).cpu()
    escapes = _ESCAPES_PER_RUN @ histogram[:_HISTOGRAM_RUNS].double()
    if int(histogram[_HISTOGRAM_RUNS]):
        long_runs = runs[runs >= _HISTOGRAM_RUNS].cpu().double()
        escapes += torch.div(long_runs[None, :], _ESCAPE_STEPS[:, None], rounding_mode="floor").sum(1)
    return [runs.numel() + int(count) for count in escapes.tolist()]


def sparse_index_bytes(numel: int, gap_fields: list[int]) -> int:
    """Bytes of the cheapest sparse index of a layer: the bitmap, or the gap encoding at its best width."""
    gaps = [GAP_COUNT.size + packed_length(fields, width) for width, fields in enumerate(gap_fields, start=1)]
    return min([packed_length(numel, 1), *gaps])


def layer_cost(numel: int, n_kept: int, n_levels: int, table_len: int, gap_fields: list[int] | None) -> LayerCost:
    """The cheapest encoding's exact cost. ``gap_fields`` (from :func:`gap_field_counts`) is needed only when sparse."""
    codebook = table_len * TABLE_ITEM_BYTES
    overhead = 1 + CODES_FIELDS.size
    kept_width = bit_width(n_levels)
    best = LayerCost("dense", 0, 0, packed_length(numel, bit_width(n_levels + 1)), 0, codebook, overhead)
    if n_kept == numel:
        return best
    kept_values = packed_length(n_kept, kept_width)
    bitmap = LayerCost("bitmap", 0, 0, kept_values, packed_length(numel, 1), codebook, overhead)
    best = min((best, bitmap), key=lambda cost: cost.total)
    assert gap_fields is not None, "a sparse layer's cost depends on where its zeros are"
    for width, fields in enumerate(gap_fields, start=1):
        index = GAP_COUNT.size + packed_length(fields, width)
        if index + kept_values + codebook + overhead < best.total:
            best = LayerCost("gap", width, fields, kept_values, index, codebook, overhead)
    return best
