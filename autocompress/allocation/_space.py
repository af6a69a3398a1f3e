"""The per-layer search space: a sparsity and a bit-width (optionally a quantizer) per layer."""

from __future__ import annotations

from dataclasses import dataclass, replace

from autocompress.allocation._suggest import Suggests
from autocompress.errors import AutocompressError
from autocompress.plan import QUANTIZERS, LayerSetting, Plan
from autocompress.settings import bounds_problem


def space_problem(sparsity_min: float, sparsity_max: float, bits_min: int, bits_max: int,
                  quantizers: tuple[str, ...]) -> str | None:
    """What is wrong with these bounds (shared by every layer) and quantizers, or None."""
    problem = bounds_problem(sparsity_min, sparsity_max, bits_min, bits_max)
    if problem:
        return problem
    unknown = [name for name in quantizers if name not in QUANTIZERS]
    if not quantizers or unknown:
        return f"quantizers must be some of {', '.join(QUANTIZERS)}, got {', '.join(quantizers) or 'none'}"
    return None


@dataclass(frozen=True)
class SearchSpace:
    """Bounds shared by every layer; ``layers`` in the model's order."""

    layers: tuple[str, ...]
    sparsity_min: float = 0.0
    sparsity_max: float = 0.95
    bits_min: int = 2
    bits_max: int = 8
    quantizers: tuple[str, ...] = ("clipq",)
    anchor: Plan | None = None  # set: search shifts around this plan (``relative`` space) instead of absolute values
    sparsity_shift: float = 0.2  # relative space: each layer's sparsity within anchor +- this
    bits_shift: int = 1  # relative space: each layer's bits within anchor +- this

    def __post_init__(self) -> None:
        problem = space_problem(self.sparsity_min, self.sparsity_max, self.bits_min, self.bits_max, self.quantizers)
        if problem:
            raise AutocompressError(problem)

    def suggest(self, trial: Suggests, *, model: str | None = None) -> Plan:
        """The trial's plan. Absolute space: parameters ``<layer>.sparsity``, ``<layer>.bits`` (and
        ``<layer>.quantizer``). Relative space (``anchor`` set): ``<layer>.sparsity_shift`` and
        ``<layer>.bits_shift``, added to the anchor's setting and clamped into the bounds."""
        layers: dict[str, LayerSetting] = {}
        for name in self.layers:
            if self.anchor is None:
                sparsity = trial.suggest_float(f"{name}.sparsity", self.sparsity_min, self.sparsity_max)
                bits = trial.suggest_int(f"{name}.bits", self.bits_min, self.bits_max)
            else:
                base = self.anchor.layers[name]
                shift = trial.suggest_float(f"{name}.sparsity_shift", -self.sparsity_shift, self.sparsity_shift)
                sparsity = self._clamp_sparsity(base.sparsity + shift)
                bits = self._clamp_bits(base.bits + trial.suggest_int(f"{name}.bits_shift", -self.bits_shift, self.bits_shift))
            quantizer = (
                trial.suggest_categorical(f"{name}.quantizer", list(self.quantizers))
                if len(self.quantizers) > 1
                else self.quantizers[0]
            )
            layers[name] = LayerSetting(sparsity=sparsity, bits=bits, quantizer=str(quantizer))
        return Plan(layers=layers, model=model)

    def params_of(self, plan: Plan) -> dict[str, float | int | str]:
        """Trial parameters that reproduce ``plan`` (clamped into the bounds), for ``enqueue_trial``."""
        params: dict[str, float | int | str] = {}
        for name in self.layers:
            setting = plan.layers[name]
            if self.anchor is None:
                params[f"{name}.sparsity"] = self._clamp_sparsity(setting.sparsity)
                params[f"{name}.bits"] = self._clamp_bits(setting.bits)
            else:
                base = self.anchor.layers[name]
                shift = self._clamp_sparsity(setting.sparsity) - base.sparsity
                params[f"{name}.sparsity_shift"] = min(max(shift, -self.sparsity_shift), self.sparsity_shift)
                bits_shift = self._clamp_bits(setting.bits) - base.bits
                params[f"{name}.bits_shift"] = min(max(bits_shift, -self.bits_shift), self.bits_shift)
            if len(self.quantizers) > 1:
                params[f"{name}.quantizer"] = setting.quantizer if setting.quantizer in self.quantizers else self.quantizers[0]
        return params

    def represents(self, plan: Plan) -> bool:
        """Whether some trial of this space proposes exactly ``plan``'s settings (within the bounds,
        and for a relative space within the shifts of its anchor)."""
        for name in self.layers:
            setting = plan.layers.get(name)
            if setting is None or setting.quantizer not in self.quantizers:
                return False
            if not (self.sparsity_min <= setting.sparsity <= self.sparsity_max and self.bits_min <= setting.bits <= self.bits_max):
                return False
            if self.anchor is not None:
                base = self.anchor.layers[name]
                if abs(setting.sparsity - base.sparsity) > self.sparsity_shift + 1e-9 or abs(setting.bits - base.bits) > self.bits_shift:
                    return False
        return True

    def around(self, anchor: Plan) -> SearchSpace:
        """The same bounds, searched as shifts around ``anchor`` (which names every layer)."""
        missing = [name for name in self.layers if name not in anchor.layers]
        if missing:
            raise AutocompressError(f"the anchor plan lacks layers {', '.join(missing[:3])}")
        return replace(self, anchor=anchor)

    def _clamp_sparsity(self, sparsity: float) -> float:
        return min(max(sparsity, self.sparsity_min), self.sparsity_max)

    def _clamp_bits(self, bits: int) -> int:
        return min(max(bits, self.bits_min), self.bits_max)

    def smallest_plans(self, *, model: str | None = None) -> list[Plan]:
        """For each quantizer, the plan of fewest bytes the space allows with it (every layer at maximum
        sparsity and minimum bits); which of them is smallest depends on the model's layers."""
        return [Plan.uniform(self.layers, sparsity=self.sparsity_max, bits=self.bits_min, quantizer=quantizer, model=model)
                for quantizer in self.quantizers]
