"""Exact size of the packed file, without writing it; the one source of truth for bytes.

In format 2 a compressed layer's bytes are those of its entropy-coded mask and codes, so they depend
on the codes themselves: sizing a plan quantizes its layers and codes them (what the writer does, so
the estimate is the file's size). :class:`SizeAccountant` remembers each layer's size per setting.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autocompress.compress import QuantizedWeight, compressible_layers, full_precision_weight, kept_count, quantize
from autocompress.pack._cost import CODED_FIELDS, TABLE_ITEM_BYTES, LayerCost, gap_field_counts, layer_cost, zero_runs
from autocompress.pack._entropy import WORD_BYTES, LayerStreams, codes_bytes_estimate, layer_streams, mask_bytes_estimate
from autocompress.pack._layout import (
    KIND_BATCHNORM,
    KIND_CODES,
    KIND_HALF,
    KIND_RAW32,
    Entry,
    model_entries,
    plain_entry_bytes,
)
from autocompress.plan import LayerSetting, Plan

MAGIC = b"\x89ACZ"
FORMAT_VERSION = 2  # what this version writes; format 1 files are still read (and written back as they were)
FORMAT_VERSIONS = (1, 2)
PREFIX = struct.Struct("<4sBH")  # magic, version, length of the model spec
SUFFIX = struct.Struct("<HIH")  # num_classes, model fingerprint, number of entries
CHECKSUM = struct.Struct("<I")  # CRC-32 of everything before it
_CACHE_SIZE = 16384  # (layer, kept count, bits, quantizer) sizes a SizeAccountant remembers


def header_bytes(model_spec: str) -> int:
    return PREFIX.size + len(model_spec.encode()) + SUFFIX.size + CHECKSUM.size


@dataclass(frozen=True)
class LayerSize:
    """One plan layer's share of the file."""

    name: str
    numel: int
    n_kept: int
    bits: int
    quantizer: str
    cost: LayerCost

    @property
    def sparsity(self) -> float:
        return 1 - self.n_kept / self.numel


@dataclass(frozen=True)
class SizeReport:
    """Bytes of a packed file by part; ``total`` equals ``os.path.getsize`` of the file."""

    layers: list[LayerSize]
    uncompressed: int
    batchnorm: int
    biases: int
    header: int
    fp32_bytes: int

    @property
    def total(self) -> int:
        return sum(layer.cost.total for layer in self.layers) + self.uncompressed + self.batchnorm + self.biases + self.header

    @property
    def ratio_to_fp32(self) -> float:
        return self.total / self.fp32_bytes

    def table(self) -> str:
        """Per-layer breakdown: values, index, codebook, other, total."""
        width = max([len(layer.name) for layer in self.layers] + [26])
        head = (
            f"{'layer':<{width}} {'weights':>9} {'sparsity':>8} {'bits':>4} {'quant':>7} {'index':>8} "
            f"{'values':>9} {'index B':>8} {'codebook':>8} {'other':>6} {'total':>9}"
        )
        lines = [head, "-" * len(head)]
        for layer in self.layers:
            cost = layer.cost
            encoding = f"gap{cost.gap_width}" if cost.encoding == "gap" else cost.encoding
            lines.append(
                f"{layer.name:<{width}} {layer.numel:>9,} {layer.sparsity:>8.3f} {layer.bits:>4} {layer.quantizer:>7} "
                f"{encoding:>8} {cost.values:>9,} {cost.index:>8,} {cost.codebook:>8,} {cost.overhead:>6,} {cost.total:>9,}"
            )
        for label, n_bytes in (
            ("layers left uncompressed", self.uncompressed),
            ("batch norms (folded, fp16)", self.batchnorm),
            ("biases (fp16)", self.biases),
            ("file header + checksum", self.header),
        ):
            lines.append(f"{label:<{width}} {'':>9} {'':>8} {'':>4} {'':>7} {'':>8} {'':>9} {'':>8} {'':>8} {n_bytes:>6,} {n_bytes:>9,}")
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<{width}} {self.total:>{len(head) - width - 1},} bytes = {self.ratio_to_fp32:.2%} of fp32 "
            f"({self.fp32_bytes:,} bytes)"
        )
        return "\n".join(lines)


def estimate_size(model: nn.Module, plan: Plan, *, model_spec: str) -> SizeReport:
    """Exact bytes of ``export`` of ``model`` (current full-precision weights) under ``plan``.

    Each plan layer is quantized as :func:`harden_` would and its streams coded, so this is the
    file's size. To size many plans of one model, :class:`SizeAccountant` remembers layers' sizes.
    """
    layers = compressible_layers(model)
    plan.check_layers(layers)

    def size_of(entry: Entry) -> LayerSize:
        return coded_layer(entry, quantize(full_precision_weight(layers[entry.name]), plan.layers[entry.name])).size

    return _report(model, set(plan.layers), model_spec, size_of)


class SizeAccountant:
    """Exact sizes of many plans for one model: each layer's size is remembered per setting.

    ``accountant.estimate(plan)`` equals ``estimate_size(model, plan, ...)`` byte for byte. A layer
    is quantized and coded once per (kept count, bits, quantizer); a layer whose weight was changed
    in place (its version counter moved) is sized again on the next call. A change made through
    ``.data`` is invisible to that check, so build a new accountant then.
    """

    def __init__(self, model: nn.Module, *, model_spec: str) -> None:
        self.model = model
        self.model_spec = model_spec
        self._layers = compressible_layers(model)
        self._stamps: dict[str, tuple[int, int]] = {}
        self._sizes: dict[tuple[str, int, int, str], LayerSize] = {}  # insertion order: the oldest is evicted first

    def estimate(self, plan: Plan) -> SizeReport:
        plan.check_layers(self._layers)
        return _report(self.model, set(plan.layers), self.model_spec, lambda entry: self._layer_size(entry.name, plan.layers[entry.name]))

    def total(self, plan: Plan) -> int:
        """``estimate(plan).total``."""
        return self.estimate(plan).total

    def layer_bytes(self, name: str, setting: LayerSetting) -> int:
        """Exact bytes of one layer's entry under ``setting`` (what it adds to ``total``)."""
        return self._layer_size(name, setting).cost.total

    def layer_size(self, name: str, setting: LayerSetting) -> LayerSize:
        """One layer's entry under ``setting``, by part (mask, codes, tables, header)."""
        return self._layer_size(name, setting)

    def other_bytes(self, plan_layers: list[str]) -> int:
        """Bytes of everything but the compressed layers' entries when ``plan_layers`` are compressed:
        header, checksum, batch norms, biases and the layers left alone. It does not depend on the settings."""
        for name in plan_layers:
            if name not in self._layers:
                raise KeyError(name)
        return _report(self.model, set(plan_layers), self.model_spec, _no_layer_cost).total

    def _layer_size(self, name: str, setting: LayerSetting) -> LayerSize:
        weight = full_precision_weight(self._layers[name])
        stamp = (weight._version, weight.data_ptr())
        if self._stamps.get(name) != stamp:
            self._stamps[name] = stamp
            self._sizes = {key: value for key, value in self._sizes.items() if key[0] != name}
        key = (name, kept_count(weight.numel(), setting.sparsity), setting.bits, setting.quantizer)
        if key not in self._sizes:
            if len(self._sizes) >= _CACHE_SIZE:
                self._sizes.pop(next(iter(self._sizes)))
            entry = Entry(KIND_CODES, name, weight.numel(), weight.shape[0] if weight.dim() else 1)
            self._sizes[key] = coded_layer(entry, quantize(weight, setting)).size
        return self._sizes[key]


@dataclass(frozen=True)
class CodedLayer:
    """A compressed layer's entry in format 2: its size and its coded streams."""

    size: LayerSize
    streams: LayerStreams


def coded_layer(entry: Entry, quantized: QuantizedWeight) -> CodedLayer:
    """Code one layer's mask and codes (format 2) and count its entry's bytes."""
    codes = quantized.codes.reshape(-1).cpu().numpy()
    kept = codes != 0
    streams = layer_streams(kept, codes[kept] - 1, quantized.n_levels)
    cost = LayerCost(
        "ans", 0, 0,
        values=WORD_BYTES * streams.codes.size,
        index=WORD_BYTES * streams.mask.size,
        codebook=TABLE_ITEM_BYTES * quantized.table.numel() + streams.table_bytes,
        overhead=1 + CODED_FIELDS.size,
    )
    return CodedLayer(LayerSize(entry.name, entry.numel, int(np.count_nonzero(kept)), quantized.bits, quantized.quantizer, cost), streams)


def estimate_layer_bytes(numel: int, n_kept: int, level_counts: np.ndarray, table_length: int) -> int:
    """A compressed layer's entry bytes from how many weights each level gets, without coding them: the
    streams' information content plus the coder's usual flush, so within a few words of
    :meth:`SizeAccountant.layer_bytes` (planners use it; the exact size comes from coding)."""
    return (1 + CODED_FIELDS.size + TABLE_ITEM_BYTES * table_length + mask_bytes_estimate(numel, n_kept)
            + codes_bytes_estimate(np.asarray(level_counts)))


def _no_layer_cost(entry: Entry) -> LayerSize:
    return LayerSize(entry.name, entry.numel, entry.numel, 0, "", LayerCost("dense", 0, 0, 0, 0, 0, 0))


def size_of_quantized(
    model: nn.Module, quantized: dict[str, QuantizedWeight], *, model_spec: str, version: int = FORMAT_VERSION
) -> SizeReport:
    """The same report computed from codes already made (what the writer writes), in format ``version``."""
    return _report(model, set(quantized), model_spec, lambda entry: quantized_layer_size(entry, quantized[entry.name], version=version))


def coded_report(model: nn.Module, coded: dict[str, CodedLayer], *, model_spec: str) -> SizeReport:
    """The format-2 report of layers already coded (the writer codes each layer once, for its size and its bytes)."""
    return _report(model, set(coded), model_spec, lambda entry: coded[entry.name].size)


def quantized_layer_size(entry: Entry, quantized: QuantizedWeight, *, version: int = FORMAT_VERSION) -> LayerSize:
    if version == 2:
        return coded_layer(entry, quantized).size
    kept = quantized.codes.reshape(-1) != 0
    n_kept = int(kept.sum())
    fields = gap_field_counts(zero_runs(kept)) if n_kept < entry.numel else None
    cost = layer_cost(entry.numel, n_kept, quantized.n_levels, quantized.table.numel(), fields)
    return LayerSize(entry.name, entry.numel, n_kept, quantized.bits, quantized.quantizer, cost)


def _report(
    model: nn.Module, plan_layers: set[str], model_spec: str, cost_of: Callable[[Entry], LayerSize]
) -> SizeReport:
    layer_sizes: list[LayerSize] = []
    plain = {KIND_RAW32: 0, KIND_HALF: 0, KIND_BATCHNORM: 0}
    for entry in model_entries(model, plan_layers):
        if entry.kind == KIND_CODES:
            layer_sizes.append(cost_of(entry))
        else:
            plain[entry.kind] += plain_entry_bytes(entry)
    fp32 = 4 * sum(t.numel() for t in model.state_dict().values() if torch.is_floating_point(t))
    return SizeReport(
        layers=layer_sizes,
        uncompressed=plain[KIND_RAW32],
        batchnorm=plain[KIND_BATCHNORM],
        biases=plain[KIND_HALF],
        header=header_bytes(model_spec),
        fp32_bytes=fp32,
    )
