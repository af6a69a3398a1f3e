"""Packed format 2: the entropy-coded streams, their price without coding, and crafted files with a valid CRC."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import constriction
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autocompress.compress import compressible_layers, magnitude_mask, quantize
from autocompress.errors import PackFormatError
from autocompress.models import build_model
from autocompress.pack import SizeAccountant, estimate_layer_bytes, export_packed, read_packed
from autocompress.pack._cost import CODED_FIELDS
from autocompress.pack._entropy import (
    FREQUENCY_PRECISIONS,
    StreamError,
    decode_codes,
    decode_mask,
    frequency_table,
    layer_streams,
    quantized_probabilities,
)
from autocompress.pack._size import PREFIX, SUFFIX
from autocompress.plan import LayerSetting, Plan
from autocompress.quantizers import get_quantizer


def test_the_model_probabilities_are_the_ones_constriction_codes_with() -> None:
    """From an empty coder, one symbol leaves the state at its left cumulative: the word it writes."""
    rng = np.random.default_rng(0)
    for case in range(60):
        size = int(rng.integers(2, 260))
        weights = rng.integers(0, 70_000, size).astype(np.float64)
        weights[rng.random(size) < 0.3] = 0
        weights[0] += 1 + case  # never all zero
        probabilities = quantized_probabilities(weights)
        assert probabilities.sum() == 2**24 and probabilities.min() >= 1
        left = np.concatenate([[0], np.cumsum(probabilities)[:-1]])
        model = constriction.stream.model.Categorical(weights, perfect=False)
        for symbol in rng.integers(0, size, 4):
            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(np.array([symbol], dtype=np.int32), model)
            words = coder.get_compressed()
            assert (int(words[0]) if words.size else 0) == left[symbol]


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 3000), st.floats(0.0, 1.0), st.integers(1, 300), st.integers(0, 2**31))
def test_streams_decode_to_what_was_coded(numel: int, kept_share: float, n_levels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    kept = rng.random(numel) < kept_share
    kept[rng.integers(numel)] = True  # a compressed layer keeps at least one weight
    skew = rng.dirichlet(np.full(n_levels, 0.3))
    symbols = rng.choice(n_levels, size=int(kept.sum()), p=skew)
    streams = layer_streams(kept, symbols, n_levels)
    assert np.array_equal(decode_mask(streams.mask, numel, int(kept.sum())), np.flatnonzero(kept))
    assert np.array_equal(decode_codes(streams.codes, streams.frequencies, symbols.size), symbols)
    assert (streams.precision in FREQUENCY_PRECISIONS) == (n_levels >= 2)
    if kept.all():
        assert streams.mask.size == 0


def test_a_stream_that_says_other_than_its_header_is_refused() -> None:
    rng = np.random.default_rng(3)
    kept = rng.random(2000) < 0.3
    symbols = rng.integers(0, 4, int(kept.sum()))
    streams = layer_streams(kept, symbols, 4)
    with pytest.raises(StreamError):
        decode_mask(streams.mask, 2000, int(kept.sum()) + 1)
    with pytest.raises(StreamError):
        decode_mask(streams.mask[1:], 2000, int(kept.sum()))
    with pytest.raises(StreamError):
        decode_codes(streams.codes, streams.frequencies, symbols.size - 5)
    with pytest.raises(StreamError):
        decode_codes(np.zeros(3, dtype=np.uint32), streams.frequencies, symbols.size)  # ends in a zero word


def test_the_frequency_table_keeps_every_used_level_and_only_those() -> None:
    counts = np.array([0, 1, 5_000_000, 3, 0])
    for precision in FREQUENCY_PRECISIONS:
        table = frequency_table(counts, precision)
        assert table.max() == 2**precision - 1
        assert list(table > 0) == list(counts > 0)


@pytest.mark.parametrize("quantizer", ["clipq", "clipq_full"])
def test_level_counts_from_the_sorted_kept_weights_are_the_quantizers_own(quantizer: str) -> None:
    torch.manual_seed(4)
    entry = get_quantizer(quantizer)
    for bits in (1, 2, 3, 5, 8):
        weight = torch.randn(64, 16, 3, 3) * torch.rand(64, 1, 1, 1)
        mask = magnitude_mask(weight, 4000)
        codes, _ = entry.quantize(weight, mask, bits)
        want = torch.bincount(codes[mask] - 1, minlength=entry.n_levels(bits, 4000))
        got = entry.sorted_kept_counts(torch.sort(weight[mask]).values, bits)
        assert got is not None and torch.equal(got, want), bits


def test_the_price_without_coding_is_within_a_few_words_of_the_exact_bytes() -> None:
    torch.manual_seed(5)
    model = build_model("resnet20").eval()
    sizes = SizeAccountant(model, model_spec="resnet20")
    rng = random.Random(5)
    for name, layer in compressible_layers(model).items():
        weight = layer.weight.detach()
        for quantizer in ("clipq", "clipq_full"):
            setting = LayerSetting(rng.choice([0.0, rng.uniform(0.3, 0.97)]), rng.randint(1, 8), quantizer)
            quantized = quantize(weight, setting)
            level_counts = torch.bincount(quantized.codes[quantized.codes > 0] - 1, minlength=quantized.n_levels)
            table = get_quantizer(quantizer).table_length(quantized.n_levels, weight.shape[0])
            estimate = estimate_layer_bytes(weight.numel(), quantized.n_kept, level_counts.numpy(), table)
            assert abs(estimate - sizes.layer_bytes(name, setting)) <= 12, (name, setting)


def _layer_header_offset(content: bytes) -> int:
    """Where conv1's codes entry's fields start (the first entry of a ResNet-20 file)."""
    spec_length = PREFIX.unpack_from(content)[2]
    return PREFIX.size + spec_length + SUFFIX.size + 1  # the kind byte


def _with_valid_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.fixture(scope="module")
def packed_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    torch.manual_seed(6)
    model = build_model("resnet20").eval()
    plan = Plan.uniform(compressible_layers(model), sparsity=0.7, bits=3, quantizer="clipq_full")
    path = tmp_path_factory.mktemp("crafted") / "m.acz"
    export_packed(model, plan, path, model_spec="resnet20", num_classes=10)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (4, 201, "layer conv1 is corrupted"),  # n_kept: the mask model is built from it, so the stream decodes wrong
        (4, 10**6, "invalid header"),
        (3, 9, "has 9 levels; clipq_full at 3 bits has 8"),
        (2, 5, "invalid frequency precision 5"),
        (5, 2**31, "streams longer than 432 weights can need"),
        (6, 2**30, "streams longer than 432 weights can need"),
        (5, 3, "is corrupted"),  # a mask stream shorter than written: the next bytes are read as its end
        (1, 0, "invalid header"),  # bits
    ],
)
def test_a_crafted_file_with_a_valid_checksum_is_refused_in_one_error(
    packed_bytes: bytes, tmp_path: Path, field: int, value: int, message: str
) -> None:
    content = packed_bytes[:-4]
    offset = _layer_header_offset(content)
    fields = list(CODED_FIELDS.unpack_from(content, offset))
    assert fields[4] == 130 and fields[3] == 8  # conv1: 432 weights, 30 % kept (130), 3 bits of clipq_full
    fields[field] = value
    crafted = content[:offset] + CODED_FIELDS.pack(*fields) + content[offset + CODED_FIELDS.size:]
    path = tmp_path / "crafted.acz"
    path.write_bytes(_with_valid_crc(crafted))
    with pytest.raises(PackFormatError, match=message) as refused:
        read_packed(path)
    assert "\n" not in str(refused.value)


def test_a_crafted_stream_word_is_refused(packed_bytes: bytes, tmp_path: Path) -> None:
    content = bytearray(packed_bytes[:-4])
    offset = _layer_header_offset(bytes(content))
    fields = CODED_FIELDS.unpack_from(content, offset)
    mask_start = offset + CODED_FIELDS.size + 2 * 8 + (8 * fields[2] + 7) // 8  # after the fp16 table and frequencies
    refused = 0
    for word in range(fields[5]):
        crafted = bytearray(content)
        crafted[mask_start + 4 * word + 1] ^= 0x5A
        path = tmp_path / "word.acz"
        path.write_bytes(_with_valid_crc(bytes(crafted)))
        try:
            read_packed(path)
        except PackFormatError as error:
            assert "corrupted" in str(error)
            refused += 1
    assert refused == fields[5]  # every altered word of the mask changes what it decodes to, or its length


def test_a_plan_right_at_the_budget_is_refit_when_training_makes_its_codes_costlier(tmp_path: Path) -> None:
    """Fine-tuning moves a layer's level counts, so a plan sized to the byte before training can come out over the
    target after it; the final step refits it on the trained weights (``fit_to_budget``, exact sizes) and the file
    it writes fits, using nearly all of the target."""
    from autocompress.allocation import SearchSpace, fit_to_budget

    torch.manual_seed(7)
    model = build_model("resnet20").eval()
    layers = compressible_layers(model)
    with torch.no_grad():  # heavy tails: the kept weights crowd into the levels nearest zero (few bits a code)
        for layer in layers.values():
            layer.weight.copy_(torch.randn_like(layer.weight) ** 3)
    plan = Plan.uniform(layers, sparsity=0.7, bits=3, quantizer="clipq_full")
    target = SizeAccountant(model, model_spec="resnet20").total(plan)  # the plan is right at the budget
    with torch.no_grad():  # "training" makes them Gaussian: the levels are used more evenly, the codes cost more
        for layer in layers.values():
            layer.weight.copy_(torch.randn_like(layer.weight))
    sizes = SizeAccountant(model, model_spec="resnet20")
    assert sizes.total(plan) > target
    space = SearchSpace(layers=tuple(layers), sparsity_max=0.95, bits_min=1, bits_max=8)
    refit = fit_to_budget(sizes, plan, space, target)
    assert refit is not None
    _, report = export_packed(model, refit, tmp_path / "refit.acz", model_spec="resnet20", num_classes=10)
    assert report.total == (tmp_path / "refit.acz").stat().st_size == sizes.total(refit) <= target
    assert report.total >= 0.99 * target
    assert all(refit.layers[name].bits == 3 for name in layers)  # a little more sparsity did it; no bits were given up
