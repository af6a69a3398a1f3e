from __future__ import annotations

from pathlib import Path

import pytest

from autocompress.compress import compressible_layers
from autocompress.errors import PlanError
from autocompress.models import build_model
from autocompress.plan import LayerSetting, Plan

VALID = """\
format: autocompress/plan
version: 1
model: resnet20
target_bytes: 50000
layers:
  conv1:          {sparsity: 0.30, bits: 6, quantizer: clipq}
  layer1.0.conv1: {sparsity: 0.72, bits: 3, quantizer: uniform}
  linear:         {sparsity: 0.5, bits: 2}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return path


def test_plan_round_trips_through_yaml(tmp_path: Path) -> None:
    plan = Plan.load(write(tmp_path, VALID))
    assert plan.layers["conv1"] == LayerSetting(0.30, 6, "clipq")
    assert plan.layers["linear"].quantizer == "clipq"  # the default
    assert list(plan.layers) == ["conv1", "layer1.0.conv1", "linear"]  # order kept
    plan.result = {"packed_bytes": 49712, "accuracy": {"val": 0.9051, "test": 0.9033}}
    again_path = tmp_path / "again.yaml"
    plan.save(again_path)
    again = Plan.load(again_path)
    assert again == plan
    assert again.to_yaml() == plan.to_yaml()
    assert "conv1: {sparsity: 0.3, bits: 6, quantizer: clipq}" in again_path.read_text()


def test_every_quantizer_and_bit_width_round_trips(tmp_path: Path) -> None:
    layers = {f"l{q}{b}": LayerSetting(b / 10, b, q) for q in ("clipq", "uniform", "kmeans") for b in range(1, 9)}
    plan = Plan(layers=layers, model="m")
    plan.save(tmp_path / "p.yaml")
    assert Plan.load(tmp_path / "p.yaml").layers == layers


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("bits: 6,", "bits: 9,", "layers.conv1.bits"),
        ("bits: 6,", "bits: 0,", "layers.conv1.bits"),
        ("bits: 6,", "bits: 6.5,", "layers.conv1.bits"),
        ("sparsity: 0.30", "sparsity: 1.0", "layers.conv1.sparsity"),
        ("sparsity: 0.30", "sparsity: -0.1", "layers.conv1.sparsity"),
        ("sparsity: 0.30, ", "", "missing field 'sparsity'"),
        ("quantizer: clipq", "quantiser: clipq", "unknown field(s) quantiser"),
        ("quantizer: clipq", "quantizer: lloyd", "layers.conv1.quantizer"),
        ("version: 1", "version: 7", "version"),
        ("format: autocompress/plan", "format: other", "format"),
        ("target_bytes: 50000", "target_bytes: 50KB", "target_bytes"),
        ("layers:", "layerz:", "unknown field(s) layerz"),
    ],
)
def test_malformed_plans_name_the_field_and_the_file(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(PlanError) as error:
        Plan.load(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="not valid YAML"):
        Plan.load(write(tmp_path, "layers: {conv1: [unclosed"))
    with pytest.raises(PlanError, match="does not exist"):
        Plan.load(tmp_path / "absent.yaml")


def test_unknown_layer_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    plan = Plan.load(write(tmp_path, VALID.replace("layer1.0.conv1", "layer1.0.convl")))
    with pytest.raises(PlanError) as error:
        plan.check_layers(compressible_layers(build_model("resnet20")), source="plan.yaml")
    assert "layers.layer1.0.convl" in str(error.value)
    suggestions = str(error.value).split("Did you mean ", 1)[1].split("?")[0]
    assert "layer1.0.conv1" in suggestions.split(", ")


def test_uniform_plan_covers_every_layer() -> None:
    names = list(compressible_layers(build_model("resnet20")))
    plan = Plan.uniform(names, sparsity=0.5, bits=4)
    assert list(plan.layers) == names and len(names) == 20
    with pytest.raises(PlanError):
        LayerSetting(sparsity=0.5, bits=4, quantizer="nope")
