"""autocompress: find per-layer sparsity and bit-widths that fit a byte budget."""

from __future__ import annotations

__version__ = "0.1.0"
