"""The per-layer search space: a sparsity and a bit-width (optionally a quantizer) per layer."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from autocompress.plan import MAX_BITS, MIN_BITS, QUANTIZERS, LayerSetting, Plan


@dataclass(frozen=True)
class SearchSpace:
    """Bounds shared by every layer; ``layers`` in the model's order."""

    layers: tuple[str, ...]
    sparsity_min: float = 0.0
    sparsity_max: float = 0.95
    bits_min: int = 2
    bits_max: int = 8
    quantizers: tuple[str, ...] = ("clipq",)

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity_min <= self.sparsity_max < 1.0:
            raise ValueError(f"sparsity bounds must satisfy 0 <= min <= max < 1, got {self.sparsity_min}, {self.sparsity_max}")
        if not MIN_BITS <= self.bits_min <= self.bits_max <= MAX_BITS:
            raise ValueError(f"bit bounds must satisfy {MIN_BITS} <= min <= max <= {MAX_BITS}, got {self.bits_min}, {self.bits_max}")
        unknown = set(self.quantizers) - set(QUANTIZERS)
        if not self.quantizers or unknown:
            raise ValueError(f"quantizers must be some of {', '.join(QUANTIZERS)}, got {', '.join(self.quantizers)}")

    def suggest(self, trial: optuna.Trial, *, model: str | None = None) -> Plan:
        """The trial's plan: parameters ``<layer>.sparsity``, ``<layer>.bits`` (and ``<layer>.quantizer``)."""
        layers: dict[str, LayerSetting] = {}
        for name in self.layers:
            sparsity = trial.suggest_float(f"{name}.sparsity", self.sparsity_min, self.sparsity_max)
            bits = trial.suggest_int(f"{name}.bits", self.bits_min, self.bits_max)
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
            params[f"{name}.sparsity"] = min(max(setting.sparsity, self.sparsity_min), self.sparsity_max)
            params[f"{name}.bits"] = min(max(setting.bits, self.bits_min), self.bits_max)
            if len(self.quantizers) > 1:
                params[f"{name}.quantizer"] = setting.quantizer if setting.quantizer in self.quantizers else self.quantizers[0]
        return params

    def smallest_plan(self, *, model: str | None = None) -> Plan:
        """The plan of fewest bytes the space allows (every layer at maximum sparsity and minimum bits)."""
        quantizer = "uniform" if "uniform" in self.quantizers and self.bits_min <= 2 else self.quantizers[0]
        return Plan.uniform(self.layers, sparsity=self.sparsity_max, bits=self.bits_min, quantizer=quantizer, model=model)
