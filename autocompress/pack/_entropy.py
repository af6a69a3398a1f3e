"""Entropy coding of a layer's mask and codes (packed format 2), with ``constriction``'s ANS coder.

Two streams per compressed layer, each a whole number of 32-bit words:

* the **mask** (which weights are kept), one binary symbol per weight in flat order, under an
  i.i.d. model whose probability is the layer's kept share. The model comes from ``numel`` and
  ``n_kept``, both in the entry's header, so nothing else is stored. A layer that keeps every
  weight has no mask stream.
* the **codes** of the kept weights (level ``1..n_levels`` as symbol ``0..n_levels - 1``), under a
  static categorical model of the layer's own level counts. The counts are stored rounded to a
  frequency table of ``precision`` bits a level (the writer picks the precision that makes the
  entry smallest); a layer with one level has no codes stream.

Both models go to ``constriction`` as floating-point weights with ``perfect=False``: its fixed-point
quantization of them (24 bits) is a pure function of the weights, so writer and reader build the
same model from what the file holds. :func:`quantized_probabilities` reproduces that quantization
here, which gives a stream's information content (its length to within a few words) without coding
it; the planners use that, and the exact size always comes from coding (:func:`layer_streams`).
Measured on real files (``docs/experiments/2026-12-08-entropy-models.md``), these two models land
within 0.4 % of the textbook bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np

ANS_PRECISION = 24  # constriction's default for categorical models (probabilities in units of 2**-24)
WORD_BYTES = 4
FREQUENCY_PRECISIONS = (4, 6, 8, 10, 12, 16)  # bits a level of the frequency table may take
_FLUSH_BITS = 48.0  # what the planners' estimate adds for the coder's final state (measured: 32 to 64 bits)


class StreamError(ValueError):
    """A stream that does not decode to what its header promises."""


@dataclass(frozen=True)
class LayerStreams:
    """One layer's coded mask and codes, and the frequency table the codes' model was built from."""

    mask: np.ndarray  # uint32 words; empty when every weight is kept
    codes: np.ndarray  # uint32 words; empty when there is at most one level
    frequencies: np.ndarray  # int64, one per level; empty when there is at most one level
    precision: int  # bits of each frequency in the file; 0 without a table

    @property
    def table_bytes(self) -> int:
        return frequency_table_bytes(self.frequencies.size, self.precision)

    @property
    def stream_bytes(self) -> int:
        return WORD_BYTES * (self.mask.size + self.codes.size)


def frequency_table_bytes(n_levels: int, precision: int) -> int:
    return (n_levels * precision + 7) // 8 if n_levels >= 2 else 0


def max_stream_words(n_symbols: int) -> int:
    """No stream of ``n_symbols`` symbols is longer: each costs at most 24 bits under a 24-bit model,
    plus the coder's final state. A file that says more is refused before anything is allocated."""
    return (n_symbols * ANS_PRECISION + 31) // 32 + 2


def quantized_probabilities(weights: np.ndarray) -> np.ndarray:
    """The integer probabilities (summing to ``2**24``) ``constriction`` makes of ``weights``
    (``Categorical(weights, perfect=False)``): every symbol gets one unit, the rest is split by floor
    of the scaled cumulative sums, in float64 as its Rust code does."""
    weights = np.asarray(weights, dtype=np.float64)
    scale = np.float64(2**ANS_PRECISION - weights.size) / weights.sum()
    cumulative = np.concatenate([[0.0], np.cumsum(weights)[:-1]])
    left = np.floor(cumulative * scale).astype(np.int64) + np.arange(weights.size)
    return np.diff(np.append(left, 2**ANS_PRECISION))


def information_bits(counts: np.ndarray, weights: np.ndarray) -> float:
    """Bits an ideal coder spends on symbols with ``counts`` under the model ``constriction`` makes of ``weights``."""
    probabilities = quantized_probabilities(weights)
    used = counts > 0
    return float((counts[used] * (ANS_PRECISION - np.log2(probabilities[used]))).sum())


def frequency_table(counts: np.ndarray, precision: int) -> np.ndarray:
    """Level counts rounded to ``precision``-bit frequencies: the largest count gets ``2**precision - 1``,
    a level used at least once at least 1, an unused level 0 (the coder still gives it one unit)."""
    counts = np.asarray(counts, dtype=np.int64)
    top = (1 << precision) - 1
    largest = int(counts.max())
    if largest <= 0:
        return np.zeros(counts.size, dtype=np.int64)
    scaled = (counts * top + largest // 2) // largest
    return np.where(counts > 0, np.maximum(scaled, 1), 0)


def mask_weights(numel: int, n_kept: int) -> np.ndarray:
    return np.array([numel - n_kept, n_kept], dtype=np.float64)


def mask_bits_estimate(numel: int, n_kept: int) -> float:
    """The mask stream's length in bits, to within a few words (0 when every weight is kept)."""
    if n_kept >= numel:
        return 0.0
    return information_bits(np.array([numel - n_kept, n_kept]), mask_weights(numel, n_kept)) + _FLUSH_BITS


def best_precision(counts: np.ndarray) -> int:
    """The frequency precision that makes table plus codes smallest by the information content; 0 for one level."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size < 2:
        return 0
    costs = {precision: frequency_table_bytes(counts.size, precision) * 8
             + information_bits(counts, _model_weights(frequency_table(counts, precision)))
             for precision in FREQUENCY_PRECISIONS}
    return min(costs, key=lambda precision: (costs[precision], precision))


def codes_bytes_estimate(counts: np.ndarray) -> int:
    """Bytes of the codes stream and its frequency table from the level counts, to within a few words."""
    counts = np.asarray(counts, dtype=np.int64)
    precision = best_precision(counts)
    if precision == 0:
        return 0
    bits = information_bits(counts, _model_weights(frequency_table(counts, precision))) + _FLUSH_BITS
    return frequency_table_bytes(counts.size, precision) + WORD_BYTES * math.ceil(bits / 32)


def mask_bytes_estimate(numel: int, n_kept: int) -> int:
    return WORD_BYTES * math.ceil(mask_bits_estimate(numel, n_kept) / 32)


def layer_streams(kept: np.ndarray, symbols: np.ndarray, n_levels: int) -> LayerStreams:
    """Code one layer: ``kept`` (bool, flat) and ``symbols`` (the kept weights' levels minus one, in flat order)."""
    numel, n_kept = kept.size, int(symbols.size)
    mask = np.zeros(0, dtype=np.uint32)
    if n_kept < numel:
        mask = _encode(kept.astype(np.int32), mask_weights(numel, n_kept))
    if n_levels < 2:
        return LayerStreams(mask, np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64), 0)
    counts = np.bincount(symbols, minlength=n_levels)
    precision = best_precision(counts)
    frequencies = frequency_table(counts, precision)
    codes = _encode(symbols.astype(np.int32), _model_weights(frequencies))
    return LayerStreams(mask, codes, frequencies, precision)


def decode_mask(words: np.ndarray, numel: int, n_kept: int) -> np.ndarray:
    """The kept weights' flat positions; :class:`StreamError` unless the stream holds exactly ``n_kept`` of ``numel``."""
    if n_kept >= numel:
        if words.size:
            raise StreamError("a layer that keeps every weight has no mask")
        return np.arange(numel)
    bits = _decode(words, mask_weights(numel, n_kept), numel)
    positions = np.flatnonzero(bits)
    if positions.size != n_kept:
        raise StreamError(f"the mask keeps {positions.size} weights, the header says {n_kept}")
    return positions


def decode_codes(words: np.ndarray, frequencies: np.ndarray, n_kept: int) -> np.ndarray:
    """The kept weights' levels minus one (int64); :class:`StreamError` if the stream is not exactly ``n_kept`` symbols."""
    if frequencies.size < 2:
        if words.size:
            raise StreamError("a layer with one level has no codes")
        return np.zeros(n_kept, dtype=np.int64)
    if not frequencies.any():
        raise StreamError("the frequency table is all zeros")
    symbols = _decode(words, _model_weights(frequencies), n_kept)
    if symbols.size and frequencies[symbols].min() == 0:
        raise StreamError("a code the frequency table says is never used")
    return symbols.astype(np.int64)


def _model_weights(frequencies: np.ndarray) -> np.ndarray:
    return np.asarray(frequencies, dtype=np.float64)


def _model(weights: np.ndarray) -> constriction.stream.model.Categorical:
    return constriction.stream.model.Categorical(weights, perfect=False)


def _encode(symbols: np.ndarray, weights: np.ndarray) -> np.ndarray:
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _model(weights))
    return np.asarray(coder.get_compressed(), dtype=np.uint32)


def _decode(words: np.ndarray, weights: np.ndarray, count: int) -> np.ndarray:
    try:
        coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        symbols = np.asarray(coder.decode(_model(weights), count))
    except Exception as error:  # constriction raises its own errors (e.g. a stream ending in a zero word)
        raise StreamError(f"the stream does not decode ({error})") from None
    if not coder.is_empty():
        raise StreamError("the stream holds more than its header says")
    return symbols
