"""The effective settings of a search: preset YAML, then command-line overrides; saved as run.yaml."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from autocompress.engine import Distillation
from autocompress.errors import AutocompressError
from autocompress.files import write_text
from autocompress.search._admm import AdmmSchedule
from autocompress.units import parse_size

SPACES = ("absolute", "relative")
MODES = ("bo", "admm")
SAMPLERS = ("tpe", "gp", "botorch", "nsga2", "random")
PRUNERS = ("median", "hyperband", "none")


@dataclass
class SearchSettings:
    """Everything a search depends on; units in the names (bytes, epochs, seconds)."""

    target_bytes: int
    model: str = "resnet18"
    checkpoint: str | None = None
    dataset: str = "cifar10"
    data_dir: str = "data"
    mode: str = "bo"
    sampler: str = "tpe"
    pruner: str = "median"
    sampler_startup_trials: int = 10  # random trials before a model-based sampler takes over
    trials: int = 40
    timeout_seconds: float | None = None
    storage: str | None = None  # default sqlite:///<output_root>/<study_name>/study.db
    study_name: str | None = None  # default <model>-<target>
    output_root: str = "studies"
    epochs_per_trial: float = 0.5
    final_epochs: float = 3.0
    distill: bool = False  # the final fine-tune also learns from the uncompressed baseline's soft outputs
    distill_temperature: float = 4.0
    distill_weight: float = 0.9  # share of the soft (teacher) term in the loss; the rest is cross-entropy
    lr: float = 0.01  # fine-tuning learning rate (cosine to 0)
    batch_size: int = 128
    device: str = "auto"
    seed: int = 0
    val_size: int = 5000
    split_seed: int = 0
    sparsity_min: float = 0.0
    sparsity_max: float = 0.95
    bits_min: int = 2
    bits_max: int = 8
    quantizers: list[str] = field(default_factory=lambda: ["clipq"])
    baseline_epochs: float = 30.0  # training of a baseline when no checkpoint is given
    warm_start: bool = True
    # workers: any number of processes or machines with the same storage and study name share one study
    n_jobs: int = 1  # worker processes this command starts on this machine (one per GPU where there are several)
    worker: bool = False  # only run trials: no final fine-tune, no best.yaml/best.acz (another process writes them)
    heartbeat_seconds: int = 30  # a running trial's heartbeat; silent for 3 of them, its worker is taken as dead
    max_retries: int = 2  # times a dead worker's trial is re-queued
    space: str = "absolute"  # or "relative": per-layer shifts around the best uniform plan
    # mode "admm" (constrained optimisation, Yang et al. 2020): one run per target
    targets: list[int] | None = None  # a sweep of targets (bytes); default [target_bytes]
    admm_epochs: float = 2.0  # ADMM phase (W-steps between projections); the hard fine-tune is final_epochs
    projections_per_epoch: int = 4
    rho_start: float = 0.01
    rho_end: float = 1.0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise AutocompressError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.pruner not in PRUNERS:
            raise AutocompressError(f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.space not in SPACES:
            raise AutocompressError(f"space must be one of {', '.join(SPACES)}, got {self.space!r}")
        if self.mode not in MODES:
            raise AutocompressError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.targets is not None and (not self.targets or any(target <= 0 for target in self.targets)):
            raise AutocompressError(f"targets must be a non-empty list of positive sizes, got {self.targets!r}")
        self.admm_schedule()  # refuses a bad ADMM schedule now, before any work
        Distillation(nn.Identity(), temperature=self.distill_temperature, weight=self.distill_weight)  # refuses bad values now
        if self.targets is not None and self.mode != "admm":
            raise AutocompressError("--targets (a sweep of targets) needs --mode admm; a BO study has one target")
        if self.trials < 1 or self.epochs_per_trial < 0 or self.final_epochs < 0:
            raise AutocompressError("trials must be at least 1 and epochs non-negative")
        if self.n_jobs < 1 or self.heartbeat_seconds < 1 or self.max_retries < 0:
            raise AutocompressError(f"n_jobs and heartbeat_seconds must be at least 1 and max_retries at least 0, got "
                                    f"n_jobs={self.n_jobs}, heartbeat_seconds={self.heartbeat_seconds}, max_retries={self.max_retries}")
        if self.mode == "admm" and (self.n_jobs > 1 or self.worker):
            raise AutocompressError("--n-jobs and --worker apply to --mode bo; an ADMM run is one process per target")

    def final_distillation(self, baseline: nn.Module) -> Distillation | None:
        """The final fine-tune's distillation from ``baseline`` (``None`` unless ``distill``)."""
        if not self.distill:
            return None
        return Distillation(baseline, temperature=self.distill_temperature, weight=self.distill_weight)

    def admm_schedule(self) -> AdmmSchedule:
        """The ADMM mode's training schedule from these settings."""
        return AdmmSchedule(epochs=self.admm_epochs, projections_per_epoch=self.projections_per_epoch,
                            rho_start=self.rho_start, rho_end=self.rho_end, lr=self.lr, batch_size=self.batch_size)

    @property
    def resolved_targets(self) -> list[int]:
        """The targets of this run, largest first (one unless an ADMM sweep)."""
        return sorted(set(self.targets), reverse=True) if self.targets else [self.target_bytes]

    @property
    def resolved_study_name(self) -> str:
        if self.study_name:
            return self.study_name
        model = self.model.replace(":", "_").replace(".", "_")
        if self.mode == "admm":
            sweep = "-".join(f"{target}B" for target in self.resolved_targets)
            return f"{model}-{sweep}-admm"
        return f"{model}-{self.target_bytes}B"

    @property
    def study_dir(self) -> Path:
        return Path(self.output_root) / self.resolved_study_name

    @property
    def resolved_storage(self) -> str:
        return self.storage or f"sqlite:///{self.study_dir / 'study.db'}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


_FIELDS = {item.name for item in dataclasses.fields(SearchSettings)}
_ALIASES = {"target_size": "target_bytes", "timeout": "timeout_seconds"}


def load_settings(preset: Path | None, overrides: dict[str, Any]) -> SearchSettings:
    """Preset values (if any), then every override that is not None."""
    values: dict[str, Any] = {}
    if preset is not None:
        if not preset.is_file():
            raise AutocompressError(f"preset {preset} does not exist; the presets are in studies/*.yaml")
        document = yaml.safe_load(preset.read_text()) or {}
        if not isinstance(document, dict):
            raise AutocompressError(f"{preset}: expected a mapping of settings")
        values.update({_ALIASES.get(key, key): value for key, value in document.items()})
    values.update({_ALIASES.get(key, key): value for key, value in overrides.items() if value is not None})
    unknown = set(values) - _FIELDS
    if unknown:
        raise AutocompressError(f"unknown setting(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_FIELDS))}")
    if isinstance(values.get("targets"), str):
        values["targets"] = [part.strip() for part in values["targets"].split(",") if part.strip()]
    if values.get("targets") is not None:
        values["targets"] = [parse_size(target) for target in values["targets"]]
        if values["targets"] and "target_bytes" not in values:
            values["target_bytes"] = max(values["targets"])
    if "target_bytes" not in values:
        raise AutocompressError("no target: pass --target-size (e.g. 50KB, 1MB) or set target_size in the preset")
    values["target_bytes"] = parse_size(values["target_bytes"])
    if isinstance(values.get("quantizers"), str):
        values["quantizers"] = [part.strip() for part in values["quantizers"].split(",")]
    return SearchSettings(**values)
