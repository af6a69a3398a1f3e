"""What a packed file holds, per layer: how many weights and how many kept, the bits and the levels the codes
really use, the bytes of its index, codes, table and header, and beside them what an entropy coder could reach.

The bounds are the usual ones of the literature: a layer's mask costs at least ``log2 C(n, k)`` bits when every
set of ``k`` kept weights out of ``n`` is as likely (the enumerative bound), and its codes at least their
empirical zero-order entropy, ``sum_i c_i log2(k / c_i)`` bits for level counts ``c_i`` (a static per-layer
model, without the cost of storing it). Neither is a hard floor for one given mask or one given code sequence;
both are what a coder with those models spends on average.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from autocompress.compress import QuantizedWeight
from autocompress.pack._format import read_packed
from autocompress.pack._size import LayerSize, size_of_quantized


def mask_bound_bits(numel: int, n_kept: int) -> float:
    """``log2 C(numel, n_kept)``: the bits of an enumerative code of which weights are kept (0 when all or none)."""
    return (math.lgamma(numel + 1) - math.lgamma(n_kept + 1) - math.lgamma(numel - n_kept + 1)) / math.log(2)


def code_entropy_bits(kept_codes: torch.Tensor) -> float:
    """The empirical zero-order entropy of the kept weights' codes, in bits for all of them."""
    counts = torch.bincount(kept_codes.reshape(-1)).double()
    counts = counts[counts > 0]
    total = float(counts.sum())
    return float((counts * torch.log2(total / counts)).sum()) if total else 0.0


@dataclass(frozen=True)
class LayerContents:
    """One compressed layer of a packed file; bytes as stored, bounds as an entropy coder could reach."""

    name: str
    weights: int
    kept: int
    quantizer: str
    bits: int
    levels: int  # non-zero levels the quantizer offers at these bits
    levels_used: int  # distinct levels the kept weights really take
    encoding: str  # dense, bitmap or gapW (relative index at W bits)
    index_bytes: int
    codes_bytes: int
    table_bytes: int
    header_bytes: int
    index_bound_bytes: float
    codes_bound_bytes: float

    @property
    def sparsity(self) -> float:
        return 1 - self.kept / self.weights

    @property
    def total_bytes(self) -> int:
        return self.index_bytes + self.codes_bytes + self.table_bytes + self.header_bytes

    @classmethod
    def of(cls, size: LayerSize, quantized: QuantizedWeight) -> LayerContents:
        codes = quantized.codes.reshape(-1)
        kept_codes = codes[codes != 0]
        cost = size.cost
        dense = cost.encoding == "dense"
        return cls(
            name=size.name, weights=size.numel, kept=size.n_kept, quantizer=size.quantizer, bits=size.bits,
            levels=quantized.n_levels, levels_used=int(torch.unique(kept_codes).numel()),
            encoding=f"gap{cost.gap_width}" if cost.encoding == "gap" else cost.encoding,
            index_bytes=cost.index, codes_bytes=cost.values, table_bytes=cost.codebook, header_bytes=cost.overhead,
            # a dense layer stores its zeros among the codes: its bound is the entropy of all codes, zeros included
            index_bound_bytes=0.0 if dense else mask_bound_bits(size.numel, size.n_kept) / 8,
            codes_bound_bytes=code_entropy_bits(codes if dense else kept_codes) / 8,
        )


@dataclass(frozen=True)
class FileContents:
    """A packed file as :func:`inspect_packed` reads it."""

    path: str
    format_version: int
    model_spec: str
    model_class: str
    num_classes: int
    file_bytes: int
    layers: list[LayerContents]
    uncompressed_bytes: int  # layers kept in fp32
    batchnorm_bytes: int
    bias_bytes: int
    file_header_bytes: int  # magic, version, model spec, fingerprint, checksum

    def totals(self) -> dict[str, float]:
        """Sums over the compressed layers, the rest of the file, and the bound of the whole file."""
        index = sum(layer.index_bytes for layer in self.layers)
        codes = sum(layer.codes_bytes for layer in self.layers)
        tables = sum(layer.table_bytes for layer in self.layers)
        headers = sum(layer.header_bytes for layer in self.layers)
        index_bound = sum(layer.index_bound_bytes for layer in self.layers)
        codes_bound = sum(layer.codes_bound_bytes for layer in self.layers)
        rest = self.uncompressed_bytes + self.batchnorm_bytes + self.bias_bytes + self.file_header_bytes
        return {"weights": sum(layer.weights for layer in self.layers), "kept": sum(layer.kept for layer in self.layers),
                "index_bytes": index, "codes_bytes": codes, "table_bytes": tables, "layer_header_bytes": headers,
                "other_bytes": rest, "file_bytes": self.file_bytes, "index_bound_bytes": round(index_bound, 1),
                "codes_bound_bytes": round(codes_bound, 1),
                "file_bound_bytes": round(index_bound + codes_bound + tables + headers + rest, 1)}

    def to_dict(self) -> dict[str, Any]:
        layers = [{**asdict(layer), "sparsity": round(layer.sparsity, 6),
                   "index_bound_bytes": round(layer.index_bound_bytes, 1),
                   "codes_bound_bytes": round(layer.codes_bound_bytes, 1)} for layer in self.layers]
        return {"path": self.path, "format_version": self.format_version, "model_spec": self.model_spec,
                "model_class": self.model_class, "num_classes": self.num_classes, "layers": layers,
                "uncompressed_bytes": self.uncompressed_bytes, "batchnorm_bytes": self.batchnorm_bytes,
                "bias_bytes": self.bias_bytes, "file_header_bytes": self.file_header_bytes, "totals": self.totals()}

    def table(self) -> str:
        """The per-layer table and the totals, for a terminal."""
        width = max([len(layer.name) for layer in self.layers] + [10])
        head = (f"{'layer':<{width}} {'weights':>8} {'sparsity':>8} {'quant':>10} {'bits':>4} {'levels':>9} {'index':>7} "
                f"{'index B':>8} {'bound':>8} {'codes B':>8} {'bound':>8} {'table B':>7} {'total B':>8}")
        lines = [f"{self.path}: format version {self.format_version}, {self.file_bytes:,} bytes; decodes to "
                 f"{self.model_spec} ({self.model_class}, {self.num_classes} classes)", head, "-" * len(head)]
        for layer in self.layers:
            lines.append(
                f"{layer.name:<{width}} {layer.weights:>8,} {layer.sparsity:>8.3f} {layer.quantizer:>10} {layer.bits:>4} "
                f"{f'{layer.levels_used}/{layer.levels}':>9} {layer.encoding:>7} {layer.index_bytes:>8,} "
                f"{layer.index_bound_bytes:>8,.0f} {layer.codes_bytes:>8,} {layer.codes_bound_bytes:>8,.0f} "
                f"{layer.table_bytes:>7,} {layer.total_bytes:>8,}")
        totals = self.totals()
        lines.append("-" * len(head))
        lines.append(
            f"{'layers':<{width}} {totals['weights']:>8,} {1 - totals['kept'] / max(totals['weights'], 1):>8.3f} "
            f"{'':>10} {'':>4} {'':>9} {'':>7} {totals['index_bytes']:>8,} {totals['index_bound_bytes']:>8,.0f} "
            f"{totals['codes_bytes']:>8,} {totals['codes_bound_bytes']:>8,.0f} {totals['table_bytes']:>7,} "
            f"{totals['index_bytes'] + totals['codes_bytes'] + totals['table_bytes'] + totals['layer_header_bytes']:>8,}")
        lines.append(f"rest of the file: {self.uncompressed_bytes:,} B fp32 layers, {self.batchnorm_bytes:,} B batch norms, "
                     f"{self.bias_bytes:,} B biases, {self.file_header_bytes + totals['layer_header_bytes']:,} B headers")
        lines.append(f"file {self.file_bytes:,} B; at the entropy bounds (enumerative masks, empirical code entropy) "
                     f"{totals['file_bound_bytes']:,.0f} B ({totals['file_bound_bytes'] / self.file_bytes:.1%})")
        return "\n".join(lines)


def inspect_packed(path: str | Path) -> FileContents:
    """Read a packed file (refusing a corrupted one as :func:`read_packed` does) and say what it holds."""
    packed = read_packed(path)
    report = size_of_quantized(packed.model, packed.quantized, model_spec=packed.model_spec, version=packed.version)
    layers = [LayerContents.of(size, packed.quantized[size.name]) for size in report.layers]
    return FileContents(path=str(path), format_version=packed.version, model_spec=packed.model_spec,
                        model_class=type(packed.model).__name__, num_classes=packed.num_classes, file_bytes=packed.n_bytes,
                        layers=layers, uncompressed_bytes=report.uncompressed, batchnorm_bytes=report.batchnorm,
                        bias_bytes=report.biases, file_header_bytes=report.header)
