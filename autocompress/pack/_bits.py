"""Fixed-width bit packing (most significant bit first, padded to whole bytes)."""

from __future__ import annotations

import numpy as np


def bit_width(n_symbols: int) -> int:
    """Bits needed to tell ``n_symbols`` symbols apart (0 when there is at most one)."""
    return 0 if n_symbols <= 1 else (n_symbols - 1).bit_length()


def packed_length(count: int, width: int) -> int:
    """Bytes that ``count`` fields of ``width`` bits occupy."""
    return (count * width + 7) // 8


def pack_bits(values: np.ndarray, width: int) -> bytes:
    """Pack non-negative integers below ``2**width`` into ``packed_length(len, width)`` bytes."""
    if width == 0 or values.size == 0:
        return b""
    values = values.astype(np.uint32, copy=False).reshape(-1)
    if width == 8:
        return values.astype(np.uint8).tobytes()
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint32)
    bits = ((values[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack_bits(buffer: bytes | memoryview, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` integers (int64)."""
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    raw = np.frombuffer(buffer, dtype=np.uint8, count=packed_length(count, width))
    if width == 8:
        return raw.astype(np.int64)
    bits = np.unpackbits(raw)[: count * width].reshape(count, width).astype(np.int64)
    weights = np.left_shift(1, np.arange(width - 1, -1, -1, dtype=np.int64))
    return bits @ weights
