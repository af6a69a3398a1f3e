"""Exact size accounting and the packed file: bytes, round trips, refusals."""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import autocompress.pack._format as pack_format
from autocompress.cli import main
from autocompress.compress import compressible_layers, harden_
from autocompress.errors import PackFormatError
from autocompress.models import build_model
from autocompress.pack import SizeAccountant, estimate_size, export_packed, inspect_packed, read_packed, write_packed
from autocompress.pack._bits import pack_bits, packed_length, unpack_bits
from autocompress.pack._cost import MAX_GAP_WIDTH, gap_field_count, gap_field_counts
from autocompress.pack._format import _gap_fields, _positions_from_gaps
from autocompress.pack._inspect import code_entropy_bits, mask_bound_bits
from autocompress.plan import QUANTIZERS, LayerSetting, Plan


@pytest.fixture(scope="module")
def resnet20() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet20").eval()


def random_plan(model: torch.nn.Module, rng: random.Random, quantizer: str) -> Plan:
    names = [name for name in compressible_layers(model) if rng.random() < 0.85]
    return Plan(layers={name: LayerSetting(rng.choice([0.0, rng.uniform(0, 0.99)]), rng.randint(1, 8), quantizer) for name in names})


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    state_b = b.state_dict()
    return all(torch.equal(value, state_b[key]) for key, value in a.state_dict().items() if "num_batches" not in key)


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_estimate_equals_file_size_and_the_file_loads_back_exactly(resnet20, tmp_path: Path, quantizer: str) -> None:
    rng = random.Random(QUANTIZERS.index(quantizer))
    x = torch.rand(16, 3, 32, 32)
    for trial in range(4):
        plan = random_plan(resnet20, rng, quantizer)
        path = tmp_path / f"{trial}.acz"
        estimate = estimate_size(resnet20, plan, model_spec="resnet20")
        hardened, report = export_packed(resnet20, plan, path, model_spec="resnet20", num_classes=10)
        assert estimate.total == report.total == os.path.getsize(path)
        packed = read_packed(path)
        assert same_state(hardened, packed.model)
        assert torch.equal(hardened(x), packed.model(x))
        assert {name: (s.bits, s.quantizer) for name, s in packed.plan.layers.items()} == {
            name: (s.bits, s.quantizer) for name, s in plan.layers.items()
        }


@pytest.mark.slow
def test_resnet18_under_1mb_estimate_gives_a_file_under_1mb(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    plan = Plan.uniform(compressible_layers(model), sparsity=0.93, bits=4, quantizer="clipq")
    estimate = estimate_size(model, plan, model_spec="resnet18").total
    assert estimate < 1_000_000
    export_packed(model, plan, tmp_path / "r18.acz", model_spec="resnet18", num_classes=10)
    assert os.path.getsize(tmp_path / "r18.acz") == estimate < 1_000_000
    assert len(compressible_layers(model)) == 21


def test_eight_bit_resnet20_is_at_most_30_percent_of_fp32(resnet20) -> None:
    plan = Plan.uniform(compressible_layers(resnet20), sparsity=0.0, bits=8, quantizer="uniform")
    report = estimate_size(resnet20, plan, model_spec="resnet20")
    assert report.ratio_to_fp32 <= 0.30
    assert report.fp32_bytes == 4 * sum(t.numel() for t in resnet20.state_dict().values() if t.is_floating_point())


@pytest.mark.parametrize(
    ("sparsity", "bits", "encoding"),
    [(0.0, 4, "dense"), (0.1, 8, "dense"), (0.2, 8, "bitmap"), (0.99, 4, "gap"), (0.999, 1, "gap")],
)
def test_format_1_still_chooses_each_index_encoding_where_cheapest_and_round_trips(
    resnet20, tmp_path: Path, sparsity: float, bits: int, encoding: str
) -> None:
    plan = Plan(layers={"layer3.2.conv2": LayerSetting(sparsity, bits, "clipq")})
    hardened = copy.deepcopy(resnet20)
    quantized = harden_(hardened, plan)
    report = write_packed(tmp_path / "e.acz", hardened, quantized, model_spec="resnet20", num_classes=10, version=1)
    assert report.layers[0].cost.encoding == encoding
    assert report.total == os.path.getsize(tmp_path / "e.acz")
    packed = read_packed(tmp_path / "e.acz")
    assert packed.version == 1 and same_state(hardened, packed.model)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=60), st.integers(1, 16))
def test_gap_fields_round_trip(runs: list[int], width: int) -> None:
    runs_array = np.array(runs, dtype=np.int64)
    positions = np.cumsum(runs_array + 1) - 1
    fields = _gap_fields(runs_array, width)
    assert fields.max() <= 2**width - 1
    assert np.array_equal(_positions_from_gaps(fields, width), positions)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 16), st.integers(0, 200), st.integers(0, 2**31))
def test_bit_packing_round_trips(width: int, count: int, seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, 2**width, size=count)
    packed = pack_bits(values, width)
    assert len(packed) == packed_length(count, width)
    assert np.array_equal(unpack_bits(packed, count, width), values)


@pytest.fixture()
def packed_file(resnet20, tmp_path: Path) -> Path:
    plan = Plan.uniform(compressible_layers(resnet20), sparsity=0.6, bits=3, quantizer="clipq")
    path = tmp_path / "model.acz"
    export_packed(resnet20, plan, path, model_spec="resnet20", num_classes=10)
    return path


def test_truncated_file_is_refused(packed_file: Path) -> None:
    content = packed_file.read_bytes()
    for cut in (3, 40, len(content) // 2, len(content) - 1):
        packed_file.write_bytes(content[:cut])
        with pytest.raises(PackFormatError, match="truncated|corrupted|not an autocompress"):
            read_packed(packed_file)


def test_bit_flip_is_refused(packed_file: Path) -> None:
    content = bytearray(packed_file.read_bytes())
    for position in (5, len(content) // 3, len(content) - 6):
        flipped = bytearray(content)
        flipped[position] ^= 0x10
        packed_file.write_bytes(bytes(flipped))
        with pytest.raises(PackFormatError, match="corrupted|version"):
            read_packed(packed_file)


def test_other_files_and_other_models_are_refused(packed_file: Path, tmp_path: Path) -> None:
    with pytest.raises(PackFormatError, match="does not exist"):
        read_packed(tmp_path / "absent.acz")
    not_packed = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(3)}, not_packed)
    with pytest.raises(PackFormatError, match="not an autocompress packed file"):
        read_packed(not_packed)
    # Same bytes, but the header claims another model: the fingerprint check refuses it.
    content = packed_file.read_bytes()[:-4]
    spec_length = struct.unpack_from("<H", content, 5)[0]
    relabelled = content[:7] + b"resnet32" + content[7 + spec_length :]
    relabelled = relabelled[:5] + struct.pack("<H", 8) + relabelled[7:]
    packed_file.write_bytes(relabelled + struct.pack("<I", zlib.crc32(relabelled)))
    with pytest.raises(PackFormatError, match="differ from 'resnet32'"):
        read_packed(packed_file)


def test_the_reader_never_unpickles() -> None:
    source = inspect.getsource(pack_format)
    assert "pickle" not in source.replace("no pickle", "") and "torch.load" not in source


@given(
    runs=st.lists(st.one_of(st.integers(0, 40), st.integers(0, 200_000)), min_size=1, max_size=200),
)
@settings(max_examples=100, deadline=None)
def test_all_gap_widths_at_once_equal_one_width_at_a_time(runs: list[int]) -> None:
    tensor = torch.tensor(runs)
    assert gap_field_counts(tensor) == [gap_field_count(tensor, width) for width in range(1, MAX_GAP_WIDTH + 1)]


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_the_accountant_gives_the_estimate_byte_for_byte(resnet20, quantizer: str) -> None:
    rng = random.Random(10 + QUANTIZERS.index(quantizer))
    sizes = SizeAccountant(resnet20, model_spec="resnet20")
    for _ in range(6):
        plan = random_plan(resnet20, rng, quantizer)
        assert sizes.estimate(plan) == estimate_size(resnet20, plan, model_spec="resnet20")


def test_the_accountant_sizes_a_layer_again_when_its_weights_change() -> None:
    torch.manual_seed(1)
    model = build_model("resnet20").eval()
    sizes = SizeAccountant(model, model_spec="resnet20")
    plan = Plan.uniform(compressible_layers(model), sparsity=0.9, bits=3, quantizer="clipq")
    before = sizes.total(plan)
    with torch.no_grad():  # the same magnitudes, but every weight positive: the codes change
        for layer in compressible_layers(model).values():
            layer.weight.abs_()
    after = sizes.total(plan)
    assert after == estimate_size(model, plan, model_spec="resnet20").total
    assert after != before


def test_inspect_accounts_for_every_byte_and_reports_what_each_layer_really_uses(packed_file: Path) -> None:
    contents = inspect_packed(packed_file)
    totals = contents.totals()
    assert (contents.format_version, contents.model_spec, contents.model_class) == (2, "resnet20", "CifarResNet")
    assert totals["file_bytes"] == os.path.getsize(packed_file) == (
        totals["index_bytes"] + totals["codes_bytes"] + totals["table_bytes"] + totals["layer_header_bytes"]
        + totals["other_bytes"])
    packed = read_packed(packed_file)
    for layer in contents.layers:
        codes = packed.quantized[layer.name].codes.reshape(-1)
        assert (layer.bits, layer.quantizer, layer.kept) == (3, "clipq", int((codes != 0).sum()))
        assert layer.levels_used == len(set(codes[codes != 0].tolist())) <= layer.levels == 2**3 - 1
        assert layer.index_bound_bytes == pytest.approx(mask_bound_bits(layer.weights, layer.kept) / 8)
        # the coded mask and codes land near their bounds: an i.i.d. mask model pays a little over log2 C(n, k)
        assert layer.index_bound_bytes - 8 <= layer.index_bytes <= 1.01 * layer.index_bound_bytes + 12
        assert layer.codes_bound_bytes - 8 <= layer.codes_bytes <= 1.01 * layer.codes_bound_bytes + 12


def test_the_entropy_bounds_are_the_textbook_ones() -> None:
    assert mask_bound_bits(8, 8) == 0 and mask_bound_bits(8, 0) == 0
    assert mask_bound_bits(4, 2) == pytest.approx(math.log2(6))
    assert code_entropy_bits(torch.tensor([3, 3, 3, 3])) == 0
    assert code_entropy_bits(torch.tensor([1, 2, 1, 2])) == pytest.approx(4.0)
    assert code_entropy_bits(torch.tensor([1, 1, 1, 2])) == pytest.approx(4 * (0.75 * math.log2(4 / 3) + 0.25 * 2))


def test_inspect_reads_the_format_1_fixture_and_prints_json_for_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    fixture = Path(__file__).parent / "fixtures" / "format_v1.acz"
    assert main(["inspect", str(fixture), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["format_version"] == 1 and printed["model_spec"] == "resnet20"
    totals = printed["totals"]
    assert totals["file_bytes"] == fixture.stat().st_size == (  # each part counted as format 1 stores it
        totals["index_bytes"] + totals["codes_bytes"] + totals["table_bytes"] + totals["layer_header_bytes"] + totals["other_bytes"])
    assert {layer["encoding"] for layer in printed["layers"]} >= {"dense", "bitmap"}
    assert {"name", "weights", "sparsity", "bits", "levels_used", "index_bytes", "codes_bytes", "table_bytes",
            "index_bound_bytes", "codes_bound_bytes"} <= set(printed["layers"][0])
    assert main(["inspect", str(fixture)]) == 0
    assert "format version 1" in capsys.readouterr().out
