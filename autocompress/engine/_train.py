"""SGD training with a cosine schedule, progress bars, divergence checks and resumable state."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler
from tqdm.auto import tqdm

from autocompress.data import DeviceLoader, TensorSet
from autocompress.engine._device import autocast_for, mode, prepare_model, trains_in_bf16, uses_fast_path
from autocompress.engine._distill import Distillation
from autocompress.engine._evaluate import evaluate
from autocompress.errors import AutocompressError, CheckpointError, TrainingDivergedError
from autocompress.models import atomic_torch_save

EpochCallback = Callable[[int, "float | None"], None]
StepCallback = Callable[[int], None]
Penalty = Callable[[], Tensor]  # a term added to every step's loss (e.g. a size regulariser)

_STATE_FORMAT = "autocompress/train-state"
_CHECK_EVERY_STEPS = 10  # finite-loss checks (and bar updates) sync with the device this often


@dataclass(frozen=True)
class TrainResult:
    """What a :func:`train` call achieved.

    ``epochs_done`` counts all finished steps (including those of a resumed run) in epochs, so
    it can be fractional; ``final_loss`` is the mean training loss of the last epoch;
    ``val_accuracy`` is measured after the last epoch (``None`` without ``val_set``);
    ``wall_seconds`` is the time spent in this call.
    """

    epochs_done: float
    final_loss: float
    val_accuracy: float | None
    wall_seconds: float
    steps_done: int


@dataclass(frozen=True)
class _Schedule:
    steps_per_epoch: int
    total_steps: int

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def steps_in_epoch(self, epoch: int) -> int:
        return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)


@dataclass(frozen=True)
class _Progress:
    epochs_finished: int
    final_loss: float
    val_accuracy: float | None


def train(
    model: nn.Module,
    train_set: TensorSet,
    *,
    device: torch.device | str,
    epochs: float,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 128,
    seed: int = 0,
    nesterov: bool = True,
    augment: bool = True,
    val_set: TensorSet | None = None,
    progress: bool = True,
    checkpoint_path: str | Path | None = None,
    on_epoch_end: EpochCallback | None = None,
    on_step: StepCallback | None = None,
    distillation: Distillation | None = None,
    penalty: Penalty | None = None,
    auxiliary: Optimizer | None = None,
    stop_after_epochs: int | None = None,
    precision: str = "auto",
) -> TrainResult:
    """Train ``model`` in place with SGD and a per-step cosine schedule from ``lr`` to 0.

    ``epochs`` may be fractional: the run takes ``ceil(epochs * steps_per_epoch)`` steps, the
    last epoch being partial. Epoch ``e`` shuffles and augments with seed ``seed + e``.
    After each epoch, ``val_set`` (if given) is evaluated, the state is saved to
    ``checkpoint_path`` (if given) and ``on_epoch_end(e, val_accuracy)`` is called with the
    0-based epoch index; ``on_step(step)`` is called after every optimizer step with the 1-based
    global step (the model is in training mode; a callback that evaluates must switch modes
    itself, as :func:`evaluate` does). Exceptions from callbacks propagate (e.g. to prune a trial). When
    ``checkpoint_path`` already holds the state of the same run, training resumes after its
    last finished epoch. Parametrized weights (``torch.nn.utils.parametrize``) train through
    their ``original`` parameters like any other parameter. With ``distillation`` the loss is
    its mix of cross-entropy and the teacher's soft outputs (the teacher is moved to ``device``).
    ``penalty()`` is added to every step's loss. ``auxiliary`` is a second optimizer for some of the
    model's parameters (e.g. learned gates): they are left out of the SGD, and it steps with it (no
    schedule; a run with it cannot be checkpointed).
    ``stop_after_epochs`` ends the call once that many epochs of the schedule are finished (counting a
    resumed run's), as an interruption would: the schedule stays that of ``epochs``, so a later call with
    the same ``checkpoint_path`` carries on to the end with the weights an unbroken run would have.
    ``precision`` (``auto``, ``fp32``, ``bf16``; see :func:`~autocompress.engine._device.trains_in_bf16`) sets the
    number format of the steps; on a CPU the models leave in the default memory format whatever it is.
    """
    device = torch.device(device)
    _check_settings(epochs, lr, momentum, batch_size, len(train_set))
    bf16 = trains_in_bf16(device, precision)
    channels_last = bf16 or uses_fast_path(device)
    torch.manual_seed(seed)
    with _memory_format_for_training(model, distillation, device, channels_last=channels_last):
        loader = DeviceLoader(
            train_set,
            batch_size=batch_size,
            device=device,
            augment=augment,
            shuffle=True,
            seed=seed,
            drop_last=len(train_set) > batch_size,
            channels_last=channels_last,
        )
        schedule = _Schedule(len(loader), math.ceil(epochs * len(loader)))
        if auxiliary is not None and checkpoint_path is not None:
            raise ValueError("a run with an auxiliary optimizer cannot be checkpointed")
        auxiliary_ids = {id(p) for group in auxiliary.param_groups for p in group["params"]} if auxiliary is not None else set()
        trained = [parameter for parameter in model.parameters() if id(parameter) not in auxiliary_ids]
        optimizer = SGD(trained, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov and momentum > 0)
        scheduler = CosineAnnealingLR(optimizer, T_max=schedule.total_steps)
        state = _Progress(0, math.nan, None)
        if checkpoint_path is not None and Path(checkpoint_path).exists():
            state = _resume(Path(checkpoint_path), model, optimizer, scheduler, schedule)
        started = time.perf_counter()
        bar = tqdm(
            total=schedule.total_steps,
            initial=state.epochs_finished * schedule.steps_per_epoch,
            unit="step",
            disable=not progress,
            dynamic_ncols=True,
        )
        try:
            last_epoch = schedule.num_epochs if stop_after_epochs is None else min(schedule.num_epochs, stop_after_epochs)
            for epoch in range(state.epochs_finished, last_epoch):
                bar.set_description(f"epoch {epoch + 1}/{schedule.num_epochs}")
                batches = islice(loader.iter_epoch(epoch), schedule.steps_in_epoch(epoch))
                loss = _train_epoch(
                    model, batches, (optimizer, auxiliary), scheduler, device, bar, epoch * schedule.steps_per_epoch,
                    on_step, distillation, penalty, bf16,
                )
                val_accuracy = evaluate(model, val_set, device=device) if val_set is not None else None
                state = _Progress(epoch + 1, loss, val_accuracy)
                if val_accuracy is not None:
                    bar.set_postfix_str(f"{bar.postfix}, val={val_accuracy:.4f}")
                if checkpoint_path is not None:
                    _save_state(Path(checkpoint_path), model, optimizer, scheduler, schedule, state)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, val_accuracy)
        finally:
            bar.close()
        steps_done = min(state.epochs_finished * schedule.steps_per_epoch, schedule.total_steps)
        return TrainResult(
            epochs_done=steps_done / schedule.steps_per_epoch,
            final_loss=state.final_loss,
            val_accuracy=state.val_accuracy,
            wall_seconds=time.perf_counter() - started,
            steps_done=steps_done,
        )


@contextlib.contextmanager
def _memory_format_for_training(
    model: nn.Module, distillation: Distillation | None, device: torch.device, *, channels_last: bool
) -> Iterator[None]:
    """Move the model (and teacher) to ``device`` in the training's memory format; on a CPU, put them back in the
    default format afterwards, so that evaluation, scoring and packing see what an fp32 run leaves."""
    models = [model] + ([distillation.teacher] if distillation is not None else [])
    for each in models:
        prepare_model(each, device, channels_last=True if channels_last else None)
    try:
        yield
    finally:
        if channels_last and device.type == "cpu":
            for each in models:
                prepare_model(each, device, channels_last=False)


def _check_settings(epochs: float, lr: float, momentum: float, batch_size: int, num_examples: int) -> None:
    if not (epochs > 0 and math.isfinite(epochs)):
        raise AutocompressError(f"epochs must be a positive number, got {epochs}")
    if not lr > 0:
        raise AutocompressError(f"the learning rate must be positive, got {lr}")
    if not 0 <= momentum < 1:
        raise AutocompressError(f"momentum must be in [0, 1), got {momentum}")
    if batch_size < 1:
        raise AutocompressError(f"batch_size must be at least 1, got {batch_size}")
    if num_examples < 2:
        raise AutocompressError(f"training needs at least 2 images (BatchNorm), got {num_examples}")


def _train_epoch(
    model: nn.Module,
    batches: Iterator[tuple[Tensor, Tensor]],
    optimizers: tuple[Optimizer, Optimizer | None],
    scheduler: LRScheduler,
    device: torch.device,
    bar: tqdm[Any],
    first_step: int,
    on_step: StepCallback | None = None,
    distillation: Distillation | None = None,
    penalty: Penalty | None = None,
    bf16: bool = False,
) -> float:
    """One (possibly partial) epoch; returns its mean loss. Syncs with the device only every
    ``_CHECK_EVERY_STEPS`` steps, where it checks the losses are finite."""
    teacher = distillation.teacher if distillation is not None else None
    loss_total, seen_steps = 0.0, 0
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen_images = 0
    pending: list[Tensor] = []
    with mode(model, training=True), _eval_mode(teacher):
        for step_in_epoch, (images, labels) in enumerate(batches, start=1):
            with autocast_for(device, bf16):
                logits = model(images)
                teacher_logits = distillation.teacher_logits(images) if distillation is not None else None
            if distillation is None or teacher_logits is None:
                loss = F.cross_entropy(logits.float(), labels)
            else:
                loss = distillation.loss(logits, teacher_logits, labels)
            if penalty is not None:
                loss = loss + penalty()
            for optimizer in optimizers:
                if optimizer is not None:
                    optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in optimizers:
                if optimizer is not None:
                    optimizer.step()
            scheduler.step()
            if on_step is not None:
                on_step(first_step + step_in_epoch)
            pending.append(loss.detach())
            correct += (logits.detach().argmax(dim=1) == labels).sum()
            seen_images += len(labels)
            if len(pending) == _CHECK_EVERY_STEPS:
                loss_total += _checked_sum(pending, first_step + seen_steps)
                seen_steps += len(pending)
                _show(bar, len(pending), loss_total / seen_steps, correct, seen_images)
                pending = []
        if pending:
            loss_total += _checked_sum(pending, first_step + seen_steps)
            seen_steps += len(pending)
            _show(bar, len(pending), loss_total / seen_steps, correct, seen_images)
    return loss_total / max(seen_steps, 1)


def _eval_mode(model: nn.Module | None) -> contextlib.AbstractContextManager[object]:
    return mode(model, training=False) if model is not None else contextlib.nullcontext()


def _checked_sum(losses: list[Tensor], first_step: int) -> float:
    values = torch.stack(losses).cpu()
    bad = torch.nonzero(~torch.isfinite(values)).flatten()
    if len(bad):
        step = first_step + int(bad[0]) + 1
        raise TrainingDivergedError(
            f"the training loss became {values[bad[0]].item()} at step {step}; "
            "lower the learning rate (--lr) or check the model and its input data"
        )
    return float(values.sum())


def _show(bar: tqdm[Any], steps: int, mean_loss: float, correct: Tensor, seen_images: int) -> None:
    bar.update(steps)
    bar.set_postfix_str(f"loss={mean_loss:.4f}, acc={int(correct) / max(seen_images, 1):.4f}", refresh=False)


def _save_state(
    path: Path,
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    schedule: _Schedule,
    state: _Progress,
) -> None:
    payload = {
        "format": _STATE_FORMAT,
        "version": 1,
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": state.epochs_finished,
        "steps_per_epoch": schedule.steps_per_epoch,
        "total_steps": schedule.total_steps,
        "final_loss": state.final_loss,
        "val_accuracy": state.val_accuracy,
        "rng_state": torch.get_rng_state(),
    }
    atomic_torch_save(payload, path)


def _resume(
    path: Path,
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    schedule: _Schedule,
) -> _Progress:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read training state {path}: {exc}; delete it to start over") from exc
    if not isinstance(payload, dict) or payload.get("format") != _STATE_FORMAT:
        raise CheckpointError(
            f"{path} exists but is not a training state written by autocompress train; "
            "pass another checkpoint path or delete the file to start over"
        )
    saved = (payload["steps_per_epoch"], payload["total_steps"])
    if saved != (schedule.steps_per_epoch, schedule.total_steps):
        raise CheckpointError(
            f"training state {path} belongs to another run ({saved[1]} steps of which {saved[0]} per epoch; "
            f"this run has {schedule.total_steps} steps, {schedule.steps_per_epoch} per epoch); "
            "use the same epochs, batch size and data to resume, or delete the file to start over"
        )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"training state {path} does not fit this model: {exc}; delete it to start over") from exc
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng_state"])
    return _Progress(int(payload["epoch"]), float(payload["final_loss"]), payload["val_accuracy"])


def seconds_per_step(model: nn.Module, train_set: TensorSet, device: torch.device, batch_size: int) -> float:
    """Time of one plain training step (cross-entropy, SGD), measured on a copy of ``model`` (for time estimates)."""
    probe = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.SGD(probe.parameters(), lr=0.0)
    loader = DeviceLoader(train_set, batch_size=batch_size, device=device, augment=True, shuffle=True, seed=0,
                          drop_last=len(train_set) > batch_size)
    batches = loader.iter_epoch(0)
    timings = []
    for _ in range(3):
        images, labels = next(batches)
        started = time.perf_counter()
        F.cross_entropy(probe(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - started)
    return min(timings[1:])
