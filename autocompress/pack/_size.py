"""Exact size of the packed file, without writing it; the one source of truth for bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.compress import QuantizedWeight, compressible_layers, kept_count, magnitude_mask, n_levels_for
from autocompress.compress._layers import _fp_weight
from autocompress.pack._cost import LayerCost, layer_cost, zero_runs
from autocompress.pack._layout import (
    KIND_BATCHNORM,
    KIND_CODES,
    KIND_HALF,
    KIND_RAW32,
    Entry,
    model_entries,
    plain_entry_bytes,
)
from autocompress.plan import Plan

MAGIC = b"\x89ACZ"
FORMAT_VERSION = 1
PREFIX = struct.Struct("<4sBH")  # magic, version, length of the model spec
SUFFIX = struct.Struct("<HIH")  # num_classes, model fingerprint, number of entries
CHECKSUM = struct.Struct("<I")  # CRC-32 of everything before it


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
        head = f"{'layer':<{width}} {'weights':>9} {'sparsity':>8} {'bits':>4} {'quant':>7} {'index':>8} {'values':>9} {'index B':>8} {'codebook':>8} {'other':>6} {'total':>9}"
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
            f"{'total':<{width}} {self.total:>{len(head) - width - 1},} bytes = {self.ratio_to_fp32:.2%} of fp32 ({self.fp32_bytes:,} bytes)"
        )
        return "\n".join(lines)


def estimate_size(model: nn.Module, plan: Plan, *, model_spec: str) -> SizeReport:
    """Exact bytes of ``export`` of ``model`` (current full-precision weights) under ``plan``.

    The sparse index's cost depends on where the zeros fall, so this reads the
    weights and computes each layer's magnitude mask.
    """
    layers = compressible_layers(model)
    plan.check_layers(layers)

    def cost_of(entry: Entry) -> LayerSize:
        setting = plan.layers[entry.name]
        weight = _fp_weight(layers[entry.name])
        n_kept = kept_count(entry.numel, setting.sparsity)
        runs = zero_runs(magnitude_mask(weight, n_kept)) if n_kept < entry.numel else None
        n_levels = n_levels_for(setting, n_kept)
        table_len = entry.out_channels if setting.quantizer == "uniform" else n_levels
        cost = layer_cost(entry.numel, n_kept, n_levels, table_len, runs)
        return LayerSize(entry.name, entry.numel, n_kept, setting.bits, setting.quantizer, cost)

    return _report(model, set(plan.layers), model_spec, cost_of)


def size_of_quantized(model: nn.Module, quantized: dict[str, QuantizedWeight], *, model_spec: str) -> SizeReport:
    """The same report computed from codes already made (what the writer writes)."""
    return _report(model, set(quantized), model_spec, lambda entry: quantized_layer_size(entry, quantized[entry.name]))


def quantized_layer_size(entry: Entry, quantized: QuantizedWeight) -> LayerSize:
    kept = quantized.codes.reshape(-1) != 0
    n_kept = int(kept.sum())
    runs = zero_runs(kept) if n_kept < entry.numel else None
    cost = layer_cost(entry.numel, n_kept, quantized.n_levels, quantized.table.numel(), runs)
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
