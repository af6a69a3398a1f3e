"""The quantizer registry and the contract every registered quantizer keeps.

The contract tests are parametrized over the registry, so a newly registered
quantizer is checked by them without writing a test of its own.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from autocompress.errors import AutocompressError, PackFormatError
from autocompress.pack import read_packed
from autocompress.pack._layout import KIND_CODES
from autocompress.pack._size import PREFIX, SUFFIX
from autocompress.plan import QUANTIZERS, LayerSetting
from autocompress.quantizers import (
    QUANTIZER_REGISTRY,
    Quantizer,
    UnknownQuantizerError,
    get_quantizer,
    quantizer_for_file_id,
    quantizer_names,
    register_quantizer,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "format_v1.acz"
REGISTERED = sorted(QUANTIZER_REGISTRY.values(), key=lambda q: q.file_id)
BITS = range(1, 9)
KEEP_FRACTIONS = (1.0, 0.65, 0.1, 0.002)


def keep_mask(weight: torch.Tensor, fraction: float) -> torch.Tensor:
    """The largest ``fraction`` of weights by magnitude (at least one)."""
    n_kept = max(1, round(fraction * weight.numel()))
    order = weight.abs().reshape(-1).argsort(descending=True)
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    mask[order[:n_kept]] = True
    return mask.view_as(weight)


@pytest.fixture(scope="module")
def weight() -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(24, 8, 3, 3, generator=generator) * 0.05


@pytest.mark.parametrize("quantizer", REGISTERED, ids=lambda q: q.name)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("fraction", KEEP_FRACTIONS)
def test_the_contract(weight: torch.Tensor, quantizer: Quantizer, bits: int, fraction: float) -> None:
    mask = keep_mask(weight, fraction)
    n_kept = int(mask.sum())
    codes, table = quantizer.quantize(weight, mask, bits)
    n_levels = quantizer.n_levels(bits, n_kept)

    assert codes.dtype == torch.int64 and codes.shape == weight.shape
    assert torch.all(codes[~mask] == 0), "a pruned weight got a non-zero code"
    assert torch.all(codes[mask] != 0), "a kept weight got code 0"
    assert int(codes.max()) <= n_levels
    assert table.dtype == torch.float16
    assert table.numel() == quantizer.table_length(n_levels, weight.shape[0])

    restored = quantizer.dequantize(codes, table, bits)
    assert restored.dtype == torch.float32 and restored.shape == weight.shape
    assert torch.equal(restored == 0, ~mask), "dequantized zeros must be exactly the pruned weights"
    assert torch.unique(codes[mask]).numel() <= n_levels
    for channel_values, channel_kept in zip(restored, mask):  # per-channel scales: at most n_levels per channel
        assert torch.unique(channel_values[channel_kept]).numel() <= n_levels
    assert torch.equal(quantizer.quantize(weight, mask, bits)[0], codes), "quantize must be deterministic"


@pytest.mark.parametrize("quantizer", REGISTERED, ids=lambda q: q.name)
def test_the_warm_start_hook(weight: torch.Tensor, quantizer: Quantizer) -> None:
    mask = keep_mask(weight, 0.5)
    _, table = quantizer.quantize(weight, mask, 3)
    init = quantizer.next_init(table)
    if init is None:
        return
    again, _ = quantizer.quantize(weight * 1.01, mask, 3, init=init)
    assert torch.equal(again == 0, ~mask)


@pytest.mark.parametrize("quantizer", REGISTERED, ids=lambda q: q.name)
def test_lookups_find_the_entry(quantizer: Quantizer) -> None:
    assert get_quantizer(quantizer.name) is quantizer
    assert quantizer_for_file_id(quantizer.file_id) is quantizer
    assert QUANTIZER_REGISTRY[quantizer.name] is quantizer


def test_file_ids_are_the_ones_files_already_use() -> None:
    ids = [quantizer.file_id for quantizer in REGISTERED]
    assert len(set(ids)) == len(ids)
    assert {name: get_quantizer(name).file_id for name in ("clipq", "uniform", "kmeans", "clipq_full")} == {
        "clipq": 0, "uniform": 1, "kmeans": 2, "clipq_full": 3}
    assert QUANTIZERS == quantizer_names() == ("clipq", "uniform", "kmeans", "clipq_full")


class _Impostor(Quantizer):
    name: ClassVar[str] = "impostor"
    file_id: ClassVar[int] = 1  # uniform's

    def n_levels(self, bits: int, n_kept: int) -> int:
        return 1

    def quantize(
        self, weight: torch.Tensor, mask: torch.Tensor, bits: int, *, init: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return mask.long(), weight.abs().max().reshape(1).half()


def test_registering_a_taken_file_id_or_name_fails() -> None:
    before = dict(QUANTIZER_REGISTRY)
    with pytest.raises(ValueError, match="file id 1 already belongs to 'uniform'"):
        register_quantizer(_Impostor())
    renamed = type("Renamed", (_Impostor,), {"name": "kmeans", "file_id": 200})
    with pytest.raises(ValueError, match="'kmeans' is already registered"):
        register_quantizer(renamed())
    out_of_range = type("OutOfRange", (_Impostor,), {"file_id": 256})
    with pytest.raises(ValueError, match="0..255"):
        register_quantizer(out_of_range())
    assert dict(QUANTIZER_REGISTRY) == before


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownQuantizerError, match="clipq, uniform, kmeans, clipq_full") as caught:
        get_quantizer("lloyd")
    assert isinstance(caught.value, AutocompressError)


def test_an_unknown_file_id_is_a_format_error() -> None:
    with pytest.raises(PackFormatError, match="unknown quantizer id 7"):
        quantizer_for_file_id(7)


def test_a_file_with_an_unknown_quantizer_id_is_refused(tmp_path: Path) -> None:
    content = bytearray(FIXTURE.read_bytes())
    spec_length = PREFIX.unpack_from(content)[2]
    first_entry = PREFIX.size + spec_length + SUFFIX.size  # conv1, a codes entry with clipq
    assert content[first_entry] == KIND_CODES and content[first_entry + 1] == 0
    content[first_entry + 1] = 200
    body = bytes(content[:-4])
    path = tmp_path / "unknown.acz"
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(PackFormatError, match="layer conv1: unknown quantizer id 200"):
        read_packed(path)


def test_plans_accept_exactly_the_registered_names() -> None:
    for name in quantizer_names():
        assert LayerSetting(0.5, 3, name).quantizer == name
    with pytest.raises(AutocompressError, match="quantizer must be one of clipq, uniform, kmeans, clipq_full"):
        LayerSetting(0.5, 3, "lloyd")


def test_the_package_does_not_import_plan_compress_or_pack() -> None:
    code = (
        "import sys, autocompress.quantizers; "
        "bad = [m for m in ('autocompress.plan', 'autocompress.compress', 'autocompress.pack', 'sklearn') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("quantizer", REGISTERED, ids=lambda q: q.name)
def test_distortions_equal_the_error_of_quantizing(quantizer: Quantizer) -> None:
    from autocompress.compress import magnitude_mask

    torch.manual_seed(3)
    for shape, kept in (((16, 8, 3, 3), 300), ((10, 64), 640), ((32, 16, 3, 3), 4000)):
        weight = torch.randn(shape) * 0.05
        mask = magnitude_mask(weight, kept)
        fast = quantizer.distortions(weight, mask, [1, 2, 3, 5, 8])
        for bits, error in zip([1, 2, 3, 5, 8], fast):
            codes, table = quantizer.quantize(weight, mask, bits)
            exact = float((quantizer.dequantize(codes, table, bits) - weight).double().pow(2).sum())
            assert error == pytest.approx(exact, rel=1e-6, abs=1e-9)


def compacted_clipq(weight: torch.Tensor, mask: torch.Tensor, bits: int, *, zero_code: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-Q written the direct way, on the kept weights compacted out (``weight[mask]``): the reference.
    ``zero_code=False``: every one of the ``2**bits`` codes is a level (clipq_full)."""
    from autocompress.quantizers._levels import interval_means, to_fp16_levels

    kept = weight.float()[mask]
    n_levels = 2**bits - 1 if zero_code else 2**bits
    edges = torch.linspace(0.0, 1.0, n_levels + 1) * (kept.max() - kept.min()) + kept.min()
    interval = torch.bucketize(kept, edges[1:-1]).clamp_(max=n_levels - 1)
    means = interval_means(kept, interval, n_levels, fallback=(edges[:-1] + edges[1:]) / 2)
    codes = torch.zeros(weight.shape, dtype=torch.int64)
    codes[mask] = interval + 1
    return codes, to_fp16_levels(means)


def test_clipq_gives_bit_for_bit_what_compacting_the_kept_weights_gives() -> None:
    """clipq quantizes with masked reductions (no host synchronisation on a GPU); its codes and fp16 levels
    must be exactly those of the compacted computation, ties, equal weights and single survivors included."""
    from autocompress.compress import magnitude_mask

    clipq = get_quantizer("clipq")
    generator = torch.Generator().manual_seed(11)
    for case in range(240):
        shape = ((16, 3, 3, 3), (64, 32, 3, 3), (10, 64), (7,))[case % 4]
        weight = torch.randn(shape, generator=generator) * 10 ** float(torch.empty(1).uniform_(-4, 1, generator=generator))
        if case % 5 == 0:
            weight = torch.round(weight * 3 / weight.abs().max()) / 3  # a handful of distinct values: many ties
        if case % 17 == 0:
            weight = torch.full(shape, 0.25)
        kept = max(1, int(weight.numel() * float(torch.rand(1, generator=generator))))
        mask = magnitude_mask(weight, kept)
        bits = 1 + case % 8
        codes, table = clipq.quantize(weight, mask, bits)
        expected_codes, expected_table = compacted_clipq(weight, mask, bits)
        assert torch.equal(codes, expected_codes), f"case {case}: codes differ"
        assert torch.equal(table, expected_table) and table.dtype == expected_table.dtype, f"case {case}: levels differ"


def test_clipq_full_has_twice_the_levels_at_each_width_and_the_same_sparse_cost() -> None:
    """clipq_full is CLIP-Q with ``2**bits`` intervals: bit for bit the compacted reference at that count; its
    kept codes are ``bits`` wide in a sparse layer's file, as CLIP-Q's are, and cost the same bytes there with a
    smaller error; at 1 bit it keeps two levels, one each side of the kept range's middle."""
    from autocompress.compress import magnitude_mask
    from autocompress.pack._bits import bit_width

    clipq, full = get_quantizer("clipq"), get_quantizer("clipq_full")
    generator = torch.Generator().manual_seed(12)
    errors = []
    for case in range(48):
        weight = torch.randn((32, 16, 3, 3), generator=generator) * 0.05
        mask = magnitude_mask(weight, 200 + 60 * case)
        bits = 1 + case % 6
        codes, table = full.quantize(weight, mask, bits)
        expected_codes, expected_table = compacted_clipq(weight, mask, bits, zero_code=False)
        assert torch.equal(codes, expected_codes) and torch.equal(table, expected_table), f"case {case}"
        assert full.n_levels(bits, int(mask.sum())) == 2**bits and bit_width(2**bits) == bits
        assert bits == 1 or bit_width(clipq.n_levels(bits, 1)) == bits  # CLIP-Q's kept codes are as wide, one level fewer
        errors.append((full.distortions(weight, mask, [bits])[0], clipq.distortions(weight, mask, [bits])[0]))
    # equal-width intervals are not nested, so one more level can cost a little in a given layer; overall it gains
    assert sum(full_error for full_error, _ in errors) < 0.9 * sum(clipq_error for _, clipq_error in errors)
    weight = torch.tensor([-0.9, -0.5, -0.01, 0.0, 0.02, 0.4, 0.6, 0.8])
    mask = weight.abs() > 0.015
    codes, table = full.quantize(weight, mask, 1)
    assert codes.tolist() == [1, 1, 0, 0, 2, 2, 2, 2]  # the middle of [-0.9, 0.8] is -0.05
    assert torch.allclose(table.float(), torch.tensor([-0.7, 0.455]), atol=1e-3)


def test_clipq_takes_a_channels_last_weight_without_a_copy_warning() -> None:
    """The GPU path keeps conv weights channels-last; quantizing one gives the contiguous result, silently."""
    import warnings

    from autocompress.compress import magnitude_mask

    weight = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(5)).to(memory_format=torch.channels_last)
    mask = magnitude_mask(weight, 300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when bucketize must copy a non-contiguous input
        codes, table = get_quantizer("clipq").quantize(weight, mask, 3)
    expected_codes, expected_table = compacted_clipq(weight.contiguous(), mask.contiguous(), 3)
    assert torch.equal(codes, expected_codes) and torch.equal(table, expected_table)


def test_a_clipq_fake_quant_training_step_has_no_boolean_indexing() -> None:
    """A boolean index (aten::nonzero) makes a CUDA step wait for the GPU; fake-quant training under
    clipq, the default quantizer, must not use one (checked on the CPU through the profiler's op names)."""
    from torch.profiler import ProfilerActivity, profile

    from autocompress.compress import attach_fake_quant_, compressible_layers
    from autocompress.models import build_model
    from autocompress.plan import Plan

    model = build_model("resnet20")
    plan = Plan.uniform(compressible_layers(model), sparsity=0.85, bits=3, quantizer="clipq")
    attach_fake_quant_(model, plan)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        torch.nn.functional.cross_entropy(model(images), labels).backward()
    names = [event.name for event in profiled.events()]
    assert names.count("aten::bucketize") >= len(plan.layers), "the profile did not see the fake quantization"
    assert "aten::nonzero" not in names, "a boolean index in the fake-quant step (a host sync per layer on a GPU)"
