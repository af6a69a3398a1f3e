"""Format compatibility: today's code reads the v1 fixture written by autocompress 0.1.0.

This test must keep passing in every later version. ``fixtures/format_v1.acz``
and ``fixtures/format_v1.json`` were written once by the previous release
(``fixtures/make_format_v1.py``, commit 96eb107) and are never regenerated or
edited: a file a user packed then must still load to the same weights and
predictions, and be written back byte for byte. A change of the packed format
gets a new ``FORMAT_VERSION`` and a new fixture (``format_v2.acz`` with its own
JSON and test) next to this one, never an edit of this one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from autocompress.compress import compressible_layers
from autocompress.pack import PackedModel, read_packed, write_packed

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE = FIXTURES / "format_v1.acz"
EXPECTED = FIXTURES / "format_v1.json"


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EXPECTED.read_text())
    return document


@pytest.fixture(scope="module")
def packed() -> PackedModel:
    assert FIXTURE.is_file(), f"{FIXTURE} is missing: it is committed (git add -f, *.acz is ignored) and never regenerated"
    return read_packed(FIXTURE)


def test_the_fixture_has_the_size_it_was_written_with(expected: dict[str, Any]) -> None:
    assert FIXTURE.stat().st_size == expected["bytes"]


def test_the_plan_is_read_back(packed: PackedModel, expected: dict[str, Any]) -> None:
    assert list(packed.plan.layers) == list(expected["plan"])
    for name, setting in packed.plan.layers.items():
        want = expected["plan"][name]
        assert setting.quantizer == want["quantizer"], name
        assert setting.bits == want["bits"], name
        assert round(setting.sparsity, 6) == pytest.approx(want["sparsity"], abs=1e-9), name
    assert packed.n_bytes == expected["bytes"]
    assert packed.model_spec == "resnet20" and packed.num_classes == 10


def test_the_weights_are_read_back(packed: PackedModel, expected: dict[str, Any]) -> None:
    layers = compressible_layers(packed.model)
    assert list(layers) == list(expected["weights_sum"])
    for name, layer in layers.items():
        total = float(layer.weight.detach().double().sum())
        assert total == pytest.approx(expected["weights_sum"][name], rel=1e-9, abs=1e-9), name


def test_the_predictions_are_the_same(packed: PackedModel, expected: dict[str, Any]) -> None:
    torch.manual_seed(expected["input_seed"])
    images = torch.randn(8, 3, 32, 32)
    packed.model.eval()
    with torch.no_grad():
        logits = packed.model(images)
    want = torch.tensor(expected["logits"])
    assert logits.shape == want.shape
    assert torch.allclose(logits, want, rtol=0, atol=1e-5), float((logits - want).abs().max())
    assert torch.equal(logits.argmax(1), want.argmax(1))


def test_writing_back_what_was_read_gives_the_same_bytes(packed: PackedModel, tmp_path: Path) -> None:
    assert set(packed.quantized) == set(packed.plan.layers)
    path = tmp_path / "again.acz"
    assert packed.version == 1
    report = write_packed(
        path, packed.model, packed.quantized, model_spec=packed.model_spec, num_classes=packed.num_classes, version=packed.version
    )
    assert report.total == FIXTURE.stat().st_size
    assert path.read_bytes() == FIXTURE.read_bytes()
    assert path.read_bytes() == FIXTURE.read_bytes()
