"""The per-layer compression plan and its versioned YAML form.

A plan maps a layer's qualified name (as in ``model.named_modules()``) to a
:class:`LayerSetting`. Layers it does not name stay uncompressed.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autocompress.errors import PlanError
from autocompress.files import write_text
from autocompress.quantizers import quantizer_names
from autocompress.settings import MAX_BITS, MIN_BITS

PLAN_FORMAT = "autocompress/plan"
PLAN_VERSION = 1
QUANTIZERS: tuple[str, ...] = quantizer_names()  # the built-in quantizers (clipq, uniform, kmeans), by file id
_LAYER_FIELDS = {"sparsity", "bits", "quantizer"}
_REQUIRED_LAYER_FIELDS = ("sparsity", "bits")
_TOP_FIELDS = {"format", "version", "model", "target_bytes", "layers", "result"}


@dataclass(frozen=True)
class LayerSetting:
    """How one layer is compressed.

    ``sparsity`` is the fraction of the layer's weights set to zero (the
    smallest magnitudes); ``bits`` is the code width of a weight when zero is
    stored as one of the codes, so a quantizer at ``bits`` b has at most
    ``2**b - 1`` non-zero levels. Two exceptions: ``uniform`` at 1 bit is
    sign x scale (two non-zero levels, the same layer as 2 bits), and
    ``clipq_full`` has ``2**b`` levels, which a pruned layer's file stores in
    ``b`` bits (its zeros are in the sparse index); sizes are always counted
    from the levels actually used.
    """

    sparsity: float
    bits: int
    quantizer: str = "clipq"

    def __post_init__(self) -> None:
        problem = setting_problem(self.sparsity, self.bits, self.quantizer)
        if problem:
            raise PlanError(problem)

    def to_dict(self) -> dict[str, Any]:
        return {"sparsity": round(float(self.sparsity), 6), "bits": int(self.bits), "quantizer": self.quantizer}


def setting_problem(sparsity: Any, bits: Any, quantizer: Any) -> str | None:
    """Describe what is wrong with one layer's fields, or return None."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not math.isfinite(sparsity):
        return f"sparsity must be a number in [0, 1), got {sparsity!r}"
    if not 0.0 <= sparsity < 1.0:
        return f"sparsity must be in [0, 1), got {sparsity!r}"
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        return f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}"
    known = quantizer_names()  # the registry now, so a quantizer registered later is accepted too
    if quantizer not in known:
        return f"quantizer must be one of {', '.join(known)}, got {quantizer!r}"
    return None


@dataclass
class Plan:
    """An ordered mapping from layer name to :class:`LayerSetting`, plus metadata."""

    layers: dict[str, LayerSetting]
    model: str | None = None
    target_bytes: int | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def uniform(
        cls,
        layer_names: Iterable[str],
        *,
        sparsity: float,
        bits: int,
        quantizer: str = "clipq",
        model: str | None = None,
        target_bytes: int | None = None,
    ) -> Plan:
        """One sparsity and one bit-width for every named layer."""
        setting = LayerSetting(sparsity=sparsity, bits=bits, quantizer=quantizer)
        return cls(layers={name: setting for name in layer_names}, model=model, target_bytes=target_bytes)

    def check_layers(self, available: Iterable[str], *, source: str = "plan") -> None:
        """Refuse layer names that are not compressible layers of the model."""
        available_names = list(available)
        known = set(available_names)
        for name in self.layers:
            if name not in known:
                close = difflib.get_close_matches(name, available_names, n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise PlanError(
                    f"{source}: layers.{name}: no compressible (Conv2d/Linear) layer of that name in the model."
                    f"{hint} The model's layers are: {', '.join(available_names[:8])}"
                    f"{' ...' if len(available_names) > 8 else ''}"
                )

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"format": PLAN_FORMAT, "version": PLAN_VERSION}
        if self.model is not None:
            document["model"] = self.model
        if self.target_bytes is not None:
            document["target_bytes"] = int(self.target_bytes)
        document["layers"] = {name: setting.to_dict() for name, setting in self.layers.items()}
        if self.result:
            document["result"] = self.result
        return document

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_PlanDumper, sort_keys=False, width=120)

    def save(self, path: str | Path) -> None:
        """Write the YAML form atomically (a crash never leaves half a file)."""
        write_text(path, self.to_yaml())

    @classmethod
    def from_dict(cls, document: Any, *, source: str = "plan") -> Plan:
        return _parse_plan(document, source)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read and validate a plan YAML file; every problem is one PlanError naming file and field."""
        plan_path = Path(path)
        if not plan_path.is_file():
            raise PlanError(f"plan file {plan_path} does not exist")
        try:
            document = yaml.safe_load(plan_path.read_text())
        except yaml.YAMLError as error:
            raise PlanError(f"{plan_path}: not valid YAML ({error})") from None
        return _parse_plan(document, str(plan_path))

    def mean_bits_and_sparsity(self, layer_sizes: Mapping[str, int]) -> tuple[float, float]:
        """Weight-count-weighted mean bits (over kept weights) and overall sparsity."""
        total = sum(layer_sizes[name] for name in self.layers)
        kept = sum(layer_sizes[name] * (1 - s.sparsity) for name, s in self.layers.items())
        bit_sum = sum(layer_sizes[name] * (1 - s.sparsity) * s.bits for name, s in self.layers.items())
        return (bit_sum / kept if kept else 0.0), (1 - kept / total if total else 0.0)

    def __str__(self) -> str:
        width = max((len(name) for name in self.layers), default=5)
        lines = [f"{'layer':<{width}}  sparsity  bits  quantizer"]
        for name, setting in self.layers.items():
            lines.append(f"{name:<{width}}  {setting.sparsity:8.3f}  {setting.bits:4d}  {setting.quantizer}")
        return "\n".join(lines)


class _PlanDumper(yaml.SafeDumper):
    """Writes each layer's setting on one line, the rest in block style."""


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    flow = set(data) <= _LAYER_FIELDS and "bits" in data
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


_PlanDumper.add_representer(dict, _represent_dict)


def _refuse_unknown_fields(fields: dict[Any, Any], allowed: set[str], where: str) -> None:
    unknown = set(fields) - allowed
    if unknown:
        raise PlanError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(allowed))}")


def _parse_plan(document: Any, source: str) -> Plan:
    if not isinstance(document, dict):
        raise PlanError(f"{source}: expected a mapping with 'format', 'version' and 'layers', got {type(document).__name__}")
    _refuse_unknown_fields(document, _TOP_FIELDS, source)
    if document.get("format") != PLAN_FORMAT:
        raise PlanError(f"{source}: format: expected {PLAN_FORMAT!r}, got {document.get('format')!r}")
    if document.get("version") != PLAN_VERSION:
        raise PlanError(f"{source}: version: this autocompress reads version {PLAN_VERSION}, got {document.get('version')!r}")
    layers_document = document.get("layers")
    if not isinstance(layers_document, dict) or not layers_document:
        raise PlanError(f"{source}: layers: missing or empty; give at least one layer with sparsity and bits")
    layers = {str(name): _parse_layer(fields, f"{source}: layers.{name}") for name, fields in layers_document.items()}
    target = document.get("target_bytes")
    if target is not None and (isinstance(target, bool) or not isinstance(target, int) or target <= 0):
        raise PlanError(f"{source}: target_bytes: must be a positive integer number of bytes, got {target!r}")
    result = document.get("result") or {}
    if not isinstance(result, dict):
        raise PlanError(f"{source}: result: must be a mapping, got {type(result).__name__}")
    model = document.get("model")
    return Plan(layers=layers, model=None if model is None else str(model), target_bytes=target, result=result)


def _parse_layer(fields: Any, where: str) -> LayerSetting:
    if not isinstance(fields, dict):
        raise PlanError(f"{where}: expected a mapping like {{sparsity: 0.5, bits: 4, quantizer: clipq}}, got {fields!r}")
    _refuse_unknown_fields(fields, _LAYER_FIELDS, where)
    for required in _REQUIRED_LAYER_FIELDS:
        if required not in fields:
            raise PlanError(f"{where}: missing field '{required}'")
    quantizer = fields.get("quantizer", "clipq")
    problem = setting_problem(fields["sparsity"], fields["bits"], quantizer)
    if problem:
        field_name = problem.split(" ", 1)[0]
        raise PlanError(f"{where}.{field_name}: {problem}")
    return LayerSetting(sparsity=float(fields["sparsity"]), bits=int(fields["bits"]), quantizer=quantizer)
