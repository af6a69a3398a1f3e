"""What every strategy's trials share: fine-tune a plan, measure it within the budget, record it."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from autocompress.allocation import fit_to_budget
from autocompress.engine import Distillation, resolved_precision
from autocompress.errors import AutocompressError
from autocompress.pack import SizeAccountant
from autocompress.pipeline import (
    BN_RECALIBRATION_BATCH_SIZE,
    BN_RECALIBRATION_BATCHES,
    CompressedModel,
    finetune_under_plan_,
    harden_and_measure,
)
from autocompress.plan import Plan
from autocompress.search._clock import FINISHING_SECONDS
from autocompress.search._context import SearchContext
from autocompress.search._outcome import SearchOutcome, finished_single_plan, outcome_of, write_best
from autocompress.study import TrialRecord, run_one_trial
from autocompress.units import format_size

# Trains ``model`` (a copy of the baseline) the strategy's way, in place; returns the plan to pack it with
# and the strategy's own measurements (recorded with the trial).
Trainer = Callable[[nn.Module, Plan, SearchContext], tuple[Plan, dict[str, Any]]]


def worker_name() -> str:
    """``host:pid`` of this process, recorded with each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def measure_within_budget(model: nn.Module, plan: Plan, context: SearchContext, *, measure_test: bool = False) -> CompressedModel:
    """Harden and measure; if fine-tuning moved zeros so that the index grew past the budget, refit
    the plan on the fine-tuned weights (a slightly higher sparsity, no retraining)."""

    def measure(candidate: Plan) -> CompressedModel:
        return harden_and_measure(model, candidate, model_spec=context.model_spec, num_classes=context.splits.num_classes,
                                  device=context.device, splits=context.splits, measure_test=measure_test)

    compressed = measure(plan)
    if compressed.size.total > context.target_bytes:
        refitted = fit_to_budget(SizeAccountant(model, model_spec=context.model_spec), plan, context.space, context.target_bytes)
        if refitted is not None:
            compressed = measure(refitted)
    return compressed


def final_distillation(context: SearchContext) -> Distillation | None:
    """The final fine-tune's distillation from the baseline (None unless ``distill`` is set)."""
    return baseline_distillation(context) if context.settings.distill else None


def baseline_distillation(context: SearchContext) -> Distillation:
    """Distillation from the baseline at the settings' temperature and weight."""
    settings = context.settings
    return Distillation(context.baseline, temperature=settings.distill_temperature, weight=settings.distill_weight)


def finetune_plan(model: nn.Module, plan: Plan, context: SearchContext, *, masks: dict[str, torch.Tensor] | None = None) -> None:
    """The final fine-tune of ``plan`` on ``model`` (in place): ``final_epochs`` of in-parallel
    pruning-quantization at the settings' lr and seed, distilled when ``distill`` is set.

    Its training state is saved in the study folder after every epoch (:func:`finetune_state_path`),
    so a run that was stopped (Ctrl-C, a kill, a lost machine) and started again carries on after
    the last finished epoch instead of from the start; the file goes once the fine-tune is done."""
    if context.clock is not None:
        epochs = time_sized_epochs(model, plan, context, masks=masks)
        context.settings = dataclasses.replace(context.settings, final_epochs=epochs)
    settings = context.settings
    state = finetune_state_path(model, plan, context, masks) if settings.final_epochs > 0 else None
    if state is not None and state.exists():
        context.log(f"  resuming the fine-tune from its last finished epoch ({state})")
    finetune_under_plan_(model, plan, context.splits.train, device=context.device, epochs=settings.final_epochs,
                         lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed, on_step=context.interrupt.check,
                         masks=masks, distillation=final_distillation(context), checkpoint_path=state,
                         precision=settings.precision)
    if state is not None:
        state.unlink(missing_ok=True)


PROBE_STEPS = 12  # training steps timed before a time-sized final fine-tune (the first two are not counted)
MIN_FINAL_STEPS = 10


def time_sized_epochs(model: nn.Module, plan: Plan, context: SearchContext, *,
                      masks: dict[str, torch.Tensor] | None = None) -> float:
    """The final fine-tune's epochs that fill the time left of ``--time``: the time left, less what evaluating,
    packing and reporting the result will take, over the measured seconds of one of its own steps (with its
    distillation and number format), in whole steps. Says when the time is too short for a useful fine-tune."""
    assert context.clock is not None
    settings, train_set = context.settings, context.splits.train
    step_seconds = measure_step_seconds(model, plan, context, masks=masks)
    evaluated = len(context.splits.val) + len(context.splits.test) + BN_RECALIBRATION_BATCHES * BN_RECALIBRATION_BATCH_SIZE
    reserve = FINISHING_SECONDS + 0.5 * step_seconds * evaluated / settings.batch_size  # a forward pass: about a third of a step
    steps_per_epoch = max(len(train_set) // settings.batch_size, 1)
    steps = int((context.clock.remaining() - reserve) / step_seconds)
    if steps < MIN_FINAL_STEPS:
        context.log(f"warning: --time leaves {max(context.clock.remaining(), 0):.0f} s for the final fine-tune, too little "
                    f"for more than {max(steps, 0)} steps of {step_seconds:.2f} s; it takes {MIN_FINAL_STEPS} steps and ends "
                    "late. Give --time more")
        steps = MIN_FINAL_STEPS
    epochs = steps / steps_per_epoch
    context.log(f"final fine-tune sized to --time: {epochs:.2f} epochs ({steps} steps of {step_seconds:.2f} s); the job "
                f"ends about {context.clock.end_text()}")
    return epochs


def measure_step_seconds(model: nn.Module, plan: Plan, context: SearchContext, *,
                         masks: dict[str, torch.Tensor] | None = None) -> float:
    """Seconds of one step of the final fine-tune of ``plan``, timed on a copy of ``model`` (median of the
    steps after the first two)."""
    settings = context.settings
    order = torch.randperm(len(context.splits.train), generator=torch.Generator().manual_seed(settings.seed))
    probe_set = context.splits.train.subset(order[: PROBE_STEPS * settings.batch_size])
    stamps: list[float] = []
    probe = copy.deepcopy(model)
    finetune_under_plan_(probe, plan, probe_set, device=context.device, epochs=1.0, lr=settings.lr,
                         batch_size=settings.batch_size, seed=settings.seed, progress=False,
                         on_step=lambda _: stamps.append(time.perf_counter()), masks=masks,
                         distillation=final_distillation(context), precision=settings.precision, recalibrate=False)
    gaps = sorted(later - earlier for earlier, later in itertools.pairwise(stamps[1:]))
    return gaps[len(gaps) // 2] if gaps else 1.0


def finetune_state_path(model: nn.Module, plan: Plan, context: SearchContext,
                        masks: dict[str, torch.Tensor] | None = None) -> Path:
    """Where the final fine-tune of ``plan`` keeps its training state: the study folder, under a name
    that digests everything the fine-tune's result depends on (the starting weights, the plan, the
    fixed sparsity pattern, the training settings and the data split). Another plan or setting gets
    another file, so a state is only ever resumed by the run that wrote it."""
    settings = context.settings
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(plan.to_dict()["layers"], sort_keys=True).encode())
    for name in sorted(masks or {}):
        digest.update(name.encode())
        digest.update((masks or {})[name].detach().cpu().contiguous().numpy().tobytes())
    recipe = [settings.final_epochs, settings.lr, settings.batch_size, settings.seed, settings.distill,
              settings.distill_temperature, settings.distill_weight, settings.dataset, settings.val_size,
              settings.split_seed, len(context.splits.train)]
    trained_in = resolved_precision(context.device, settings.precision)
    if trained_in != ("bf16" if context.device.type == "cuda" else "fp32"):
        # named only where it differs from what "auto" trained in before CPUs got bf16, so that an interrupted
        # state of an older version still resumes when the number format is the same
        recipe.append(trained_in)
    digest.update(json.dumps(recipe).encode())
    return settings.study_dir / f"finetune-{digest.hexdigest()[:16]}.state"


def train_final(model: nn.Module, plan: Plan, context: SearchContext) -> tuple[Plan, dict[str, Any]]:
    """The :data:`Trainer` of the joint strategies: the final fine-tune, packed with the plan itself."""
    finetune_plan(model, plan, context)
    return plan, {}


def plan_trial(context: SearchContext, plan: Plan, *, strategy: str, train: Trainer = train_final,
               extra: dict[str, Any] | None = None) -> SearchOutcome:
    """One trial that trains ``plan`` the strategy's way, measures it (test included: it is final), records
    it, and writes ``best.yaml`` and ``best.acz``. The single-plan strategies are this and a plan."""
    study, folder = context.opened_study, context.settings.study_dir
    done = finished_single_plan(context, strategy, folder)
    if done is not None:
        recorded = done.result or {}
        context.log(f"trial {recorded['trial']} already complete (val {recorded['accuracy']['val']:.2%}, test "
                    f"{recorded['accuracy']['test']:.2%}, {recorded['packed_bytes']:,} B); its files are in {folder}")
        return outcome_of(context, done, folder)

    def work(trial: optuna.Trial) -> tuple[float, tuple[CompressedModel, dict[str, Any]]]:
        started = time.perf_counter()
        TrialRecord(strategy=strategy, worker=worker_name(), target_bytes=context.target_bytes).write(trial)
        model = copy.deepcopy(context.baseline)
        packing_plan, measurements = train(model, plan, context)
        compressed = measure_within_budget(model, packing_plan, context, measure_test=True)
        record = TrialRecord.measured(compressed, target_bytes=context.target_bytes,
                                      wall_seconds=time.perf_counter() - started, strategy=strategy)
        record.extra = measurements
        record.write(trial)
        return float(compressed.val_accuracy or 0.0), (compressed, measurements)

    result = run_one_trial(study, work)
    if result is None:
        raise AutocompressError(f"{strategy}: the training diverged (loss not finite); try a lower --lr")
    trial_number, (compressed, measurements) = result
    facts = {"strategy": strategy, **(extra or {}), **({"measurements": measurements} if measurements else {})}
    written = write_best(folder, compressed, context, trial_number=trial_number, extra=facts)
    context.log(f"{folder / 'best.acz'}: {format_size(written.result['packed_bytes'])} (target "
                f"{format_size(context.target_bytes)}), val {compressed.val_accuracy:.2%}, test {compressed.test_accuracy:.2%}")
    return outcome_of(context, written, folder)
