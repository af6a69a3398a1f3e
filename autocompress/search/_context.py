"""What every strategy is given: the settings, the baseline, the data, the space, the sizes, the study.

:func:`prepare_context` does the work every run shares, in the order that loses nothing: the model
and its checkpoint, the space and the targets (an unreachable target is refused here, before any data
is read or any file written), the data, the baseline (trained first when no checkpoint is given), the
study folder and ``run.yaml``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from torch import nn

from autocompress.allocation import BudgetCheck, SearchSpace, check_target
from autocompress.compress import compressible_layers
from autocompress.data import DataSplits, prepare_splits
from autocompress.engine import evaluate, resolve_device, seconds_per_step, train
from autocompress.errors import DataError
from autocompress.models import build_model, load_checkpoint, save_checkpoint
from autocompress.pack import SizeAccountant
from autocompress.search._clock import JobClock
from autocompress.settings import SearchSettings
from autocompress.study import InterruptGuard, WorkerEntry

Log = Callable[[str], None]


@dataclass
class SearchContext:
    """What a strategy needs, passed in explicitly; ``study`` is set once the run opens it."""

    settings: SearchSettings
    baseline: nn.Module
    splits: DataSplits
    space: SearchSpace
    device: torch.device
    budgets: list[BudgetCheck]  # one per target, largest target first
    log: Log = print
    interrupt: InterruptGuard = field(default_factory=InterruptGuard)
    study: optuna.Study | None = None
    study_created: bool = False  # this process created the study (it queues the warm starts)
    clock: JobClock | None = None  # the whole-job time budget (--time), None without one
    worker_entry: WorkerEntry | None = None  # what a worker process of --n-jobs runs (the runner's execute_worker)
    sizes: SizeAccountant = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = SizeAccountant(self.baseline, model_spec=self.model_spec)

    @property
    def model_spec(self) -> str:
        return self.settings.model

    @property
    def target_bytes(self) -> int:
        return self.settings.target_bytes

    @property
    def opened_study(self) -> optuna.Study:
        if self.study is None:
            raise RuntimeError("the study is not open yet")
        return self.study

    def for_target(self, target_bytes: int) -> SearchContext:
        """The same context aimed at another target (a sweep); the study and the interrupt guard are shared."""
        moved = dataclasses.replace(self, settings=dataclasses.replace(self.settings, target_bytes=target_bytes))
        moved.sizes = self.sizes
        return moved


def prepare_context(settings: SearchSettings, *, log: Log = print, clock: JobClock | None = None,
                    kl_scored: bool = False) -> SearchContext:
    """Model, targets, data and baseline for ``settings``, checked against the data; the study folder.
    ``kl_scored``: the run's trials take the KL score (its images are checked against the training split)."""
    device = resolve_device(settings.device)
    probe = build_model(settings.model, num_classes=settings.num_classes)
    if settings.checkpoint is not None:
        load_checkpoint(probe, settings.checkpoint)
    space = space_for(probe, settings)
    probe_sizes = SizeAccountant(probe, model_spec=settings.model)
    budgets = [check_target(probe_sizes, space, target) for target in settings.resolved_targets]
    splits = prepare_splits(settings.dataset, settings.data_dir, val_size=settings.val_size, split_seed=settings.split_seed)
    data_problem = settings_data_problem(settings, splits, kl_scored=kl_scored)
    if data_problem:
        raise DataError(data_problem)
    baseline = probe if settings.checkpoint is not None else prepare_baseline(settings, splits, device, log=log)
    baseline.to(device).eval()
    settings.study_dir.mkdir(parents=True, exist_ok=True)
    return SearchContext(settings, baseline, splits, space, device, budgets, log=log, clock=clock)


def settings_data_problem(settings: SearchSettings, splits: DataSplits, *, kl_scored: bool) -> str | None:
    """A count in the settings that the data cannot give (None: all fit)."""
    train_images = len(splits.train)
    if kl_scored:
        asked = settings.score_images + settings.score_bn_images
        if asked > train_images:
            return (f"the KL score asks for {settings.score_images:,} + {settings.score_bn_images:,} training images "
                    f"(score_images + score_bn_images) and the training split holds {train_images:,}; lower them "
                    f"(the defaults are 1024 and 512)")
    if settings.batch_size > train_images:
        return (f"batch_size {settings.batch_size:,} is more than the {train_images:,} training images; give at most "
                f"{train_images:,}")
    return None


def space_for(model: nn.Module, settings: SearchSettings) -> SearchSpace:
    """The absolute space of the settings' bounds over the model's compressible layers."""
    return SearchSpace(layers=tuple(compressible_layers(model)), sparsity_min=settings.sparsity_min,
                       sparsity_max=settings.sparsity_max, bits_min=settings.bits_min, bits_max=settings.bits_max,
                       quantizers=tuple(settings.quantizers))


def baseline_accuracy(model: nn.Module, splits: DataSplits, device: torch.device) -> dict[str, float]:
    return {"val": evaluate(model, splits.val, device=device), "test": evaluate(model, splits.test, device=device)}


def prepare_baseline(settings: SearchSettings, splits: DataSplits, device: torch.device, *, log: Log = print) -> nn.Module:
    """Train (or load the cached) baseline for a model given without weights; say how long it takes."""
    model = build_model(settings.model, num_classes=splits.num_classes)
    cache = baseline_cache(settings)
    if cache.exists():
        load_checkpoint(model, cache)
        log(f"baseline: cached {cache}")
        return model
    seconds = seconds_per_step(model, splits.train, device, settings.batch_size)
    steps = settings.baseline_epochs * (len(splits.train) // settings.batch_size)
    log(
        f"no --checkpoint: training a {settings.model} baseline for {settings.baseline_epochs:g} epochs first "
        f"(about {seconds * steps / 3600:.1f} h on {device}, {seconds:.2f} s per step); it is cached in {cache}, "
        f"and an interrupted run resumes. Pass --checkpoint to compress your own trained model instead."
        + ("" if device.type == "cuda" else
           " On a CPU, the pretrained CIFAR ResNets fit: studies/resnet20-50KB.yaml and studies/resnet56-100KB.yaml "
           "(--config); a ResNet-18 wants a GPU.")
    )
    train(model, splits.train, device=device, epochs=settings.baseline_epochs, lr=0.1, batch_size=settings.batch_size,
          seed=settings.seed, val_set=splits.val, checkpoint_path=cache.with_name(cache.name + ".state"),
          precision=settings.precision)
    save_checkpoint(cache, model, model_spec=settings.model, dataset=settings.dataset, seed=settings.seed)
    return model


def baseline_cache(settings: SearchSettings) -> Path:
    """Where the baseline trained for a search without --checkpoint is kept (by model, dataset and seed)."""
    return Path(settings.output_root) / "baselines" / f"{settings.model.replace(':', '_')}-{settings.dataset}-s{settings.seed}.pt"
