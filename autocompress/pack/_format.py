"""The packed ``.acz`` file: a small self-describing binary format, no pickle.

Layout (little-endian)::

    magic "\\x89ACZ" | version u8 | spec length u16 | model spec (utf-8)
    num_classes u16 | model fingerprint u32 | number of entries u16
    entries, in the model's state-dict order:
      fp32      kind u8, numel x f32
      fp16      kind u8, numel x f16                      (biases)
      batchnorm kind u8, C x f16 scale, C x f16 shift     (folded)
      codes     format 2: kind u8, quantizer file id u8, bits u8, frequency precision u8,
                n_levels u16, n_kept u32, mask words u32, codes words u32, table (f16),
                frequency table (n_levels fields of `precision` bits, when n_levels >= 2),
                mask stream (u32 words), codes stream (u32 words)        (see _entropy)
                format 1: kind u8, quantizer file id u8, bits u8, encoding u8, gap width u8,
                n_levels u16, n_kept u32, [gap fields u32], table (f16),
                index (bitmap or gap fields), values (bit-packed codes)
    CRC-32 of everything above, u32

The plan is recoverable from the codes entries (quantizer, bits, kept count). Every field is
checked against the model and the bytes left before anything is allocated from it.
"""

from __future__ import annotations

import copy
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from autocompress.compress import QuantizedWeight, dequantize, folded_running_var, harden_, is_foldable_batchnorm
from autocompress.errors import AutocompressError, PackFormatError
from autocompress.files import check_output_path, write_bytes
from autocompress.models import build_model
from autocompress.pack._bits import bit_width, pack_bits, packed_length, unpack_bits
from autocompress.pack._cost import CODED_FIELDS, CODES_FIELDS, ENCODINGS, GAP_COUNT, zero_runs
from autocompress.pack._entropy import (
    FREQUENCY_PRECISIONS,
    StreamError,
    decode_codes,
    decode_mask,
    max_stream_words,
)
from autocompress.pack._layout import (
    KIND_BATCHNORM,
    KIND_CODES,
    KIND_HALF,
    KIND_NAMES,
    KIND_RAW32,
    Entry,
    canonical_state,
    model_entries,
    model_fingerprint,
)
from autocompress.pack._size import (
    CHECKSUM,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    MAGIC,
    PREFIX,
    SUFFIX,
    CodedLayer,
    SizeReport,
    coded_layer,
    coded_report,
    quantized_layer_size,
    size_of_quantized,
)
from autocompress.plan import LayerSetting, Plan
from autocompress.quantizers import get_quantizer, quantizer_for_file_id
from autocompress.settings import MAX_BITS, MIN_BITS


@dataclass
class PackedModel:
    """A packed file loaded back: an ordinary module in eval mode, the plan it holds, and its codes.

    ``quantized`` holds each plan layer's codes and table as read, so
    ``write_packed(path, packed.model, packed.quantized, model_spec=packed.model_spec,
    num_classes=packed.num_classes, version=packed.version)`` writes the same bytes back.
    """

    model: nn.Module
    plan: Plan
    model_spec: str
    num_classes: int
    n_bytes: int
    quantized: dict[str, QuantizedWeight] = field(default_factory=dict)
    version: int = FORMAT_VERSION  # the format version the file was written in


def export_packed(
    model: nn.Module, plan: Plan, path: str | Path, *, model_spec: str, num_classes: int
) -> tuple[nn.Module, SizeReport]:
    """Harden a copy of ``model`` under ``plan`` and write it; return the hardened copy and its sizes."""
    check_output_path(path)  # before the work: a directory is no place for the file
    hardened = copy.deepcopy(model)
    quantized = harden_(hardened, plan)
    report = write_packed(path, hardened, quantized, model_spec=model_spec, num_classes=num_classes)
    return hardened, report


def write_packed(
    path: str | Path,
    model: nn.Module,
    quantized: dict[str, QuantizedWeight],
    *,
    model_spec: str,
    num_classes: int,
    version: int = FORMAT_VERSION,
) -> SizeReport:
    """Write ``model`` (hardened by :func:`harden_`) with its plan layers' codes; atomic.

    ``version`` 1 writes the first format (fixed-width codes), for writing an old file back as it was."""
    if version not in FORMAT_VERSIONS:
        raise ValueError(f"packed format version {version} is not one of {FORMAT_VERSIONS}")
    entries = model_entries(model, set(quantized))
    coded = {entry.name: coded_layer(entry, quantized[entry.name]) for entry in entries if entry.kind == KIND_CODES and version == 2}
    report = coded_report(model, coded, model_spec=model_spec) if version == 2 else size_of_quantized(
        model, quantized, model_spec=model_spec, version=version)
    body = io.BytesIO()
    spec = model_spec.encode()
    state = dict(canonical_state(model))
    modules = dict(model.named_modules())
    body.write(PREFIX.pack(MAGIC, version, len(spec)) + spec)
    body.write(SUFFIX.pack(num_classes, model_fingerprint(model), len(entries)))
    for entry in entries:
        if entry.kind == KIND_CODES:
            layer = quantized[entry.name]
            body.write(_codes_entry(entry, layer) if version == 1 else _coded_entry(layer, coded[entry.name]))
        elif entry.kind == KIND_BATCHNORM:
            body.write(_batchnorm_entry(cast(_BatchNorm, modules[entry.name])))  # model_entries: foldable batch norms only
        else:
            body.write(_plain_entry(entry, state))
    content = body.getvalue()
    content += CHECKSUM.pack(zlib.crc32(content))
    if len(content) != report.total:
        raise AssertionError(f"size accounting is off: wrote {len(content)} bytes, estimated {report.total}")
    write_bytes(path, content)
    return report


def read_packed(path: str | Path) -> PackedModel:
    """Load a packed file into an ordinary module; refuse anything truncated or corrupted."""
    file_path = Path(path)
    if file_path.is_dir():
        raise PackFormatError(f"{file_path} is a directory; give a packed .acz file, such as studies/<study>/best.acz")
    if not file_path.is_file():
        raise PackFormatError(f"packed file {file_path} does not exist")
    content = file_path.read_bytes()
    reader = _Reader(content, file_path)
    magic, version, spec_length = reader.unpack(PREFIX)
    if magic != MAGIC:
        raise PackFormatError(f"{file_path} is not an autocompress packed file (bad magic bytes); export one with `autocompress export`")
    if version not in FORMAT_VERSIONS:
        raise PackFormatError(
            f"{file_path} is packed format version {version}; this autocompress reads versions "
            f"{', '.join(map(str, FORMAT_VERSIONS))} (a newer autocompress wrote it?)"
        )
    if len(content) < PREFIX.size + SUFFIX.size + CHECKSUM.size or zlib.crc32(content[:-4]) != CHECKSUM.unpack(content[-4:])[0]:
        raise PackFormatError(f"{file_path} is truncated or corrupted (checksum mismatch); export it again")
    model_spec = bytes(reader.take(spec_length)).decode("utf-8", errors="replace")
    num_classes, fingerprint, n_entries = reader.unpack(SUFFIX)
    try:
        model = build_model(model_spec, num_classes=num_classes)
    except AutocompressError as error:
        raise PackFormatError(f"{file_path} holds model {model_spec!r}, which cannot be built here: {error}") from None
    if model_fingerprint(model) != fingerprint:
        raise PackFormatError(f"{file_path} was packed from a model whose layers differ from {model_spec!r} as built here")
    plan, quantized = _read_entries(reader, model, n_entries, model_spec, version)
    if reader.remaining() != CHECKSUM.size:
        raise PackFormatError(f"{file_path} has {reader.remaining() - CHECKSUM.size} unexpected trailing bytes")
    model.eval()
    return PackedModel(
        model=model, plan=plan, model_spec=model_spec, num_classes=num_classes, n_bytes=len(content), quantized=quantized,
        version=version,
    )


def _coded_entry(quantized: QuantizedWeight, coded: CodedLayer) -> bytes:
    """A format-2 codes entry: header, tables, then the coded mask and codes."""
    streams = coded.streams
    header = CODED_FIELDS.pack(
        get_quantizer(quantized.quantizer).file_id,
        quantized.bits,
        streams.precision,
        quantized.n_levels,
        coded.size.n_kept,
        streams.mask.size,
        streams.codes.size,
    )
    return b"".join([
        bytes([KIND_CODES]),
        header,
        quantized.table.cpu().numpy().astype("<f2").tobytes(),
        pack_bits(streams.frequencies, streams.precision) if streams.frequencies.size else b"",
        streams.mask.astype("<u4").tobytes(),
        streams.codes.astype("<u4").tobytes(),
    ])


def _codes_entry(entry: Entry, quantized: QuantizedWeight) -> bytes:
    size = quantized_layer_size(entry, quantized, version=1)
    cost = size.cost
    codes = quantized.codes.reshape(-1).cpu()
    kept = codes != 0
    parts = [
        bytes([KIND_CODES]),
        CODES_FIELDS.pack(
            get_quantizer(quantized.quantizer).file_id,
            quantized.bits,
            ENCODINGS.index(cost.encoding),
            cost.gap_width,
            quantized.n_levels,
            size.n_kept,
        )
    ]
    if cost.encoding == "gap":
        parts.append(GAP_COUNT.pack(cost.gap_fields))
    parts.append(quantized.table.cpu().numpy().astype("<f2").tobytes())
    if cost.encoding == "dense":
        parts.append(pack_bits(codes.numpy(), bit_width(quantized.n_levels + 1)))
        return b"".join(parts)
    if cost.encoding == "bitmap":
        parts.append(pack_bits(kept.numpy(), 1))
    else:
        parts.append(pack_bits(_gap_fields(zero_runs(kept).numpy(), cost.gap_width), cost.gap_width))
    parts.append(pack_bits(codes[kept].numpy() - 1, bit_width(quantized.n_levels)))
    return b"".join(parts)


def _gap_fields(runs: np.ndarray, width: int) -> np.ndarray:
    """Gap fields: escapes (all ones, skip 2**width-1) then the remainder, per kept weight."""
    escape = 2**width - 1
    escapes, remainders = np.divmod(runs, escape)
    field_ends = np.cumsum(escapes + 1) - 1
    fields = np.full(int(field_ends[-1]) + 1 if field_ends.size else 0, escape, dtype=np.int64)
    fields[field_ends] = remainders
    return fields


def _positions_from_gaps(fields: np.ndarray, width: int) -> np.ndarray:
    escape = 2**width - 1
    advance = np.where(fields == escape, escape, fields + 1)
    return (np.cumsum(advance) - 1)[fields != escape]


def _batchnorm_entry(bn: _BatchNorm) -> bytes:
    assert bn.running_mean is not None and bn.running_var is not None  # foldable: it tracks running stats
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
    return bytes([KIND_BATCHNORM]) + _half_bytes(scale) + _half_bytes(shift)


def _plain_entry(entry: Entry, state: dict[str, torch.Tensor]) -> bytes:
    tensor = state[entry.name].detach().cpu().reshape(-1)
    if entry.kind == KIND_HALF:
        return bytes([KIND_HALF]) + _half_bytes(tensor)
    return bytes([KIND_RAW32]) + tensor.float().numpy().astype("<f4").tobytes()


def _half_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().half().numpy().astype("<f2").tobytes()


class _Reader:
    """Bounds-checked sequential reads over the file's bytes."""

    def __init__(self, content: bytes, path: Path) -> None:
        self.view = memoryview(content)
        self.offset = 0
        self.path = path

    def take(self, n_bytes: int) -> memoryview:
        if self.offset + n_bytes > len(self.view) - CHECKSUM.size:
            raise PackFormatError(f"{self.path} is truncated (needs more bytes at offset {self.offset}); export it again")
        chunk = self.view[self.offset : self.offset + n_bytes]
        self.offset += n_bytes
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple[int, ...]:
        return layout.unpack(self.take(layout.size))

    def remaining(self) -> int:
        return len(self.view) - self.offset

    def floats(self, count: int, dtype: str) -> torch.Tensor:
        item = 2 if dtype == "<f2" else 4
        array = np.frombuffer(self.take(count * item), dtype=dtype, count=count)
        return torch.from_numpy(array.astype(np.float32))


def _read_entries(
    reader: _Reader, model: nn.Module, n_entries: int, model_spec: str, version: int
) -> tuple[Plan, dict[str, QuantizedWeight]]:
    expected = model_entries(model, plan_layers={name for name, _ in model.named_modules()})
    if n_entries != len(expected):
        raise PackFormatError(f"{reader.path} has {n_entries} entries; model {model_spec!r} needs {len(expected)}")
    state = {key: value.clone() for key, value in model.state_dict().items()}
    modules = dict(model.named_modules())
    layers: dict[str, LayerSetting] = {}
    quantized: dict[str, QuantizedWeight] = {}
    for entry in expected:
        kind = reader.take(1)[0]
        if kind == KIND_CODES and entry.kind == KIND_CODES:
            read = _read_codes if version == 1 else _read_coded
            codes = quantized[entry.name] = read(reader, entry, state)
            sparsity = (entry.numel - codes.n_kept) / entry.numel
            layers[entry.name] = LayerSetting(sparsity=sparsity, bits=codes.bits, quantizer=codes.quantizer)
        elif kind == KIND_RAW32 and entry.kind == KIND_CODES:
            key = f"{entry.name}.weight"
            state[key] = reader.floats(entry.numel, "<f4").view_as(state[key])
        elif kind != entry.kind:
            raise PackFormatError(
                f"{reader.path}: entry {entry.name} is stored as {KIND_NAMES.get(kind, kind)}, expected {KIND_NAMES[entry.kind]}"
            )
        elif kind == KIND_BATCHNORM:
            _read_batchnorm(reader, entry, modules[entry.name], state)
        else:
            dtype = "<f2" if kind == KIND_HALF else "<f4"
            state[entry.name] = reader.floats(entry.numel, dtype).view_as(state[entry.name])
    model.load_state_dict(state)
    return Plan(layers=layers, model=model_spec), quantized


def _read_batchnorm(reader: _Reader, entry: Entry, bn: nn.Module, state: dict[str, torch.Tensor]) -> None:
    if not is_foldable_batchnorm(bn):
        raise PackFormatError(f"{reader.path}: {entry.name} is not a batch norm in this model")
    state[f"{entry.name}.weight"] = reader.floats(entry.numel, "<f2")
    state[f"{entry.name}.bias"] = reader.floats(entry.numel, "<f2")
    state[f"{entry.name}.running_mean"] = torch.zeros(entry.numel)
    state[f"{entry.name}.running_var"] = folded_running_var(entry.numel, bn.eps)


def _read_coded(reader: _Reader, entry: Entry, state: dict[str, torch.Tensor]) -> QuantizedWeight:
    """A format-2 codes entry; every count is checked against the layer before it sizes a read."""
    quantizer_id, bits, precision, n_levels, n_kept, mask_words, codes_words = reader.unpack(CODED_FIELDS)
    try:
        quantizer = quantizer_for_file_id(quantizer_id)
    except PackFormatError as error:
        raise PackFormatError(f"{reader.path}: layer {entry.name}: {error}") from None
    where = f"{reader.path}: layer {entry.name}"
    if not MIN_BITS <= bits <= MAX_BITS or not 1 <= n_kept <= entry.numel:
        raise PackFormatError(f"{where} has an invalid header (bits {bits}, {n_kept} kept of {entry.numel})")
    if n_levels != quantizer.n_levels(bits, n_kept):
        raise PackFormatError(f"{where} has {n_levels} levels; {quantizer.name} at {bits} bits has {quantizer.n_levels(bits, n_kept)}")
    if (precision in FREQUENCY_PRECISIONS) != (n_levels >= 2):
        raise PackFormatError(f"{where} has an invalid frequency precision {precision}")
    if mask_words > max_stream_words(entry.numel) or codes_words > max_stream_words(n_kept):
        raise PackFormatError(f"{where} has streams longer than {entry.numel} weights can need")
    table = reader.floats(quantizer.table_length(n_levels, entry.out_channels), "<f2").half()
    frequencies = unpack_bits(reader.take(packed_length(n_levels, precision)), n_levels, precision) if precision else np.zeros(0)
    mask = np.frombuffer(reader.take(4 * mask_words), dtype="<u4")
    code_words = np.frombuffer(reader.take(4 * codes_words), dtype="<u4")
    try:
        positions = decode_mask(mask, entry.numel, n_kept)
        symbols = decode_codes(code_words, frequencies.astype(np.int64), n_kept)
    except StreamError as error:
        raise PackFormatError(f"{where} is corrupted: {error}; export it again") from None
    codes = np.zeros(entry.numel, dtype=np.int64)
    codes[positions] = symbols + 1
    weight_key = f"{entry.name}.weight"
    codes_tensor = torch.from_numpy(codes).view(state[weight_key].shape)
    quantized = QuantizedWeight(codes=codes_tensor, table=table, quantizer=quantizer.name, bits=bits, n_levels=n_levels)
    state[weight_key] = dequantize(quantized)
    return quantized


def _read_codes(reader: _Reader, entry: Entry, state: dict[str, torch.Tensor]) -> QuantizedWeight:
    quantizer_id, bits, encoding_id, gap_width, n_levels, n_kept = reader.unpack(CODES_FIELDS)
    try:
        quantizer = quantizer_for_file_id(quantizer_id)
    except PackFormatError as error:
        raise PackFormatError(f"{reader.path}: layer {entry.name}: {error}") from None
    if encoding_id >= len(ENCODINGS) or not MIN_BITS <= bits <= MAX_BITS or not 1 <= n_kept <= entry.numel:
        raise PackFormatError(f"{reader.path}: layer {entry.name} has an invalid header")
    encoding = ENCODINGS[encoding_id]
    gap_fields = reader.unpack(GAP_COUNT)[0] if encoding == "gap" else 0
    table_len = quantizer.table_length(n_levels, entry.out_channels)
    table = reader.floats(table_len, "<f2").half()
    codes = _read_codes_payload(reader, entry.numel, n_kept, n_levels, encoding, gap_width, gap_fields)
    if codes.max() > n_levels or int(np.count_nonzero(codes)) != n_kept:
        raise PackFormatError(f"{reader.path}: layer {entry.name} has codes that do not match its header")
    weight_key = f"{entry.name}.weight"
    codes_tensor = torch.from_numpy(codes).view(state[weight_key].shape)
    quantized = QuantizedWeight(codes=codes_tensor, table=table, quantizer=quantizer.name, bits=bits, n_levels=n_levels)
    state[weight_key] = dequantize(quantized)
    return quantized


def _read_codes_payload(
    reader: _Reader, numel: int, n_kept: int, n_levels: int, encoding: str, gap_width: int, gap_fields: int
) -> np.ndarray:
    if encoding == "dense":
        width = bit_width(n_levels + 1)
        return unpack_bits(reader.take(packed_length(numel, width)), numel, width)
    if encoding == "bitmap":
        positions = np.flatnonzero(unpack_bits(reader.take(packed_length(numel, 1)), numel, 1))
    else:
        if not 1 <= gap_width <= 16:
            raise PackFormatError(f"{reader.path}: invalid gap width {gap_width}")
        fields = unpack_bits(reader.take(packed_length(gap_fields, gap_width)), gap_fields, gap_width)
        positions = _positions_from_gaps(fields, gap_width)
    width = bit_width(n_levels)
    values = unpack_bits(reader.take(packed_length(n_kept, width)), n_kept, width) + 1
    if positions.size != n_kept or (positions.size and (positions[-1] >= numel or positions[0] < 0)):
        raise PackFormatError(f"{reader.path}: sparse index does not match the kept count")
    codes = np.zeros(numel, dtype=np.int64)
    codes[positions] = values
    return codes
