"""Exact size accounting and the packed ``.acz`` file: one source of truth for bytes."""

from __future__ import annotations

from autocompress.pack._format import PackedModel, export_packed, read_packed, write_packed
from autocompress.pack._size import FORMAT_VERSION, LayerSize, SizeAccountant, SizeReport, estimate_size, size_of_quantized

__all__ = [
    "FORMAT_VERSION",
    "LayerSize",
    "PackedModel",
    "SizeAccountant",
    "SizeReport",
    "estimate_size",
    "export_packed",
    "read_packed",
    "size_of_quantized",
    "write_packed",
]
