"""Exact size accounting and the packed ``.acz`` file: one source of truth for bytes."""

from __future__ import annotations

from autocompress.pack._bits import bit_width, packed_length
from autocompress.pack._cost import LayerCost, gap_field_counts, layer_cost, sparse_index_bytes, zero_runs
from autocompress.pack._format import PackedModel, export_packed, read_packed, write_packed
from autocompress.pack._inspect import FileContents, LayerContents, inspect_packed
from autocompress.pack._size import (
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    LayerSize,
    SizeAccountant,
    SizeReport,
    estimate_layer_bytes,
    estimate_size,
    size_of_quantized,
)

__all__ = [
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "FileContents",
    "LayerContents",
    "LayerCost",
    "LayerSize",
    "PackedModel",
    "SizeAccountant",
    "SizeReport",
    "bit_width",
    "estimate_layer_bytes",
    "estimate_size",
    "export_packed",
    "gap_field_counts",
    "inspect_packed",
    "layer_cost",
    "packed_length",
    "read_packed",
    "size_of_quantized",
    "sparse_index_bytes",
    "write_packed",
    "zero_runs",
]
