"""What a trial stores about itself, and what is read back from it: one typed record.

Every strategy writes a :class:`TrialRecord` into its trials (as Optuna user attributes, so the
dashboard shows them), and everything that reads trials (the best-trial choice, ``report``, the
Pareto files, ``compare``) reads them back through :meth:`TrialRecord.of`. The attribute names are
the ones earlier versions wrote, so their studies still read.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autocompress.plan import LayerSetting, Plan

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from autocompress.pack import SizeReport
    from autocompress.pipeline import CompressedModel

CONSTRAINT_NAME = "packed_bytes_over_target"  # Optuna constraint: feasible when <= 0


@dataclass
class TrialRecord:
    """One trial's facts; ``None`` where a trial did not get that far (or an older version did not store it)."""

    strategy: str | None = None  # who proposed the plan: a sampler, a warm start, a mode
    worker: str | None = None  # host:pid that ran it
    target_bytes: int | None = None  # the target it was fitted to (a sweep has several)
    packed_bytes: int | None = None  # exact bytes of its packed file
    feasible: bool | None = None  # packed_bytes <= target_bytes
    constraint: list[float] | None = None  # [packed_bytes - target]: Optuna's constraint value
    compression_ratio: float | None = None  # fp32 bytes / packed bytes
    val_accuracy: float | None = None
    test_accuracy: float | None = None  # only for the final, reported models; never used to choose
    mean_bits: float | None = None  # code bits averaged over the kept weights
    sparsity: float | None = None  # share of the compressed layers' weights pruned
    repaired: bool | None = None  # the proposal was moved onto the budget
    plan: dict[str, dict[str, Any]] | None = None  # per layer: sparsity, bits, quantizer
    kl_to_baseline: float | None = None  # the cheap score: KL(baseline || compressed) on the calibration images
    agreement: float | None = None  # share of calibration images where the compressed top-1 is the baseline's
    fidelity: str | None = None  # "score" (no training), "finetune" (short) or "final"; None: an older version's trial
    parent: int | None = None  # a fine-tune's scored trial (its number in the main study)
    wall_seconds: float | None = None
    fail_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # a strategy's own measurements (failure modes, stages)

    @classmethod
    def measured(cls, compressed: CompressedModel, *, target_bytes: int, wall_seconds: float, **facts: Any) -> TrialRecord:
        """The record of a hardened, measured model (bytes, ratio, bits, sparsity, plan, accuracy)."""
        return cls.sized(compressed.plan, compressed.size, target_bytes=target_bytes, wall_seconds=wall_seconds,
                         val_accuracy=compressed.val_accuracy, test_accuracy=compressed.test_accuracy, **facts)

    @classmethod
    def sized(cls, plan: Plan, size: SizeReport, *, target_bytes: int, wall_seconds: float, **facts: Any) -> TrialRecord:
        """The record of a plan and its exact size (bytes, ratio, bits, sparsity), before any measurement."""
        weights = sum(layer.numel for layer in size.layers)
        kept = sum(layer.n_kept for layer in size.layers)
        bits = sum(layer.n_kept * layer.bits for layer in size.layers)
        return cls(
            target_bytes=target_bytes,
            packed_bytes=size.total,
            feasible=size.total <= target_bytes,
            constraint=[float(size.total - target_bytes)],
            compression_ratio=size.fp32_bytes / size.total,
            mean_bits=bits / kept if kept else 0.0,
            sparsity=1 - kept / weights if weights else 0.0,
            plan={name: setting.to_dict() for name, setting in plan.layers.items()},
            wall_seconds=wall_seconds,
            **facts,
        )

    def write(self, trial: optuna.Trial) -> None:
        """Store every known fact as a user attribute, and the size constraint for the samplers."""
        for key, value in self.attributes().items():
            trial.set_user_attr(key, value)
        if self.constraint is not None:
            trial.set_constraint(CONSTRAINT_NAME, self.constraint[0])

    def attributes(self) -> dict[str, Any]:
        """The user attributes this record stands for (``extra`` flattened in)."""
        known = {item.name: getattr(self, item.name) for item in dataclasses.fields(self) if item.name != "extra"}
        return {**{key: value for key, value in known.items() if value is not None}, **self.extra}

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        """The record stored in ``trial`` (fields it lacks stay None; unknown attributes go to ``extra``)."""
        attrs = dict(trial.user_attrs)
        names = {item.name for item in dataclasses.fields(cls)} - {"extra"}
        record = cls(**{name: attrs.pop(name) for name in list(attrs) if name in names})
        record.extra = attrs
        return record

    def plan_for(self, model_spec: str | None) -> Plan:
        """The trial's plan (the one measured, after any repair)."""
        if not self.plan:
            raise ValueError("this trial recorded no plan")
        return Plan(layers={name: LayerSetting(**fields) for name, fields in self.plan.items()}, model=model_spec)

    @property
    def usable(self) -> bool:
        """Fits its target and has a measured plan: a candidate for the final fine-tune."""
        return bool(self.feasible) and bool(self.plan)


def constraint_of(trial: FrozenTrial) -> list[float]:
    """Optuna constraint of a finished trial: feasible when <= 0; a trial that never got a size counts as infeasible."""
    constraint = TrialRecord.of(trial).constraint
    return list(constraint) if constraint is not None else [1.0]


def finite(value: float | None) -> float:
    """``value`` as a float, NaN for None (tables)."""
    return math.nan if value is None else float(value)


@dataclass
class StudyFacts:
    """What a study stores about itself (Optuna study user attributes), written by its runs."""

    target_bytes: int | None = None
    model: str | None = None
    settings: dict[str, Any] | None = None  # the effective settings of the run that created it
    baseline_accuracy: dict[str, float] | None = None  # {"val": ..., "test": ...} of the uncompressed model
    final: dict[str, Any] | None = None  # the final fine-tune's packed bytes, accuracy and trial
    targets: list[int] | None = None  # an ADMM sweep's targets

    @classmethod
    def of(cls, study: optuna.Study) -> StudyFacts:
        attrs = study.user_attrs
        return cls(**{item.name: attrs[item.name] for item in dataclasses.fields(cls) if item.name in attrs})

    def write(self, study: optuna.Study) -> None:
        """Store the known facts (None leaves what the study holds)."""
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is not None:
                study.set_user_attr(item.name, value)
