"""The BO mode (CLIP-Q style): an Optuna study over per-layer sparsity and bits, then the best trial fine-tuned.

A trial proposes a plan in the search space, moves it onto the exact budget (``fit_to_budget``),
fine-tunes a copy of the baseline with in-parallel pruning-quantization for ``epochs_per_trial``,
hardens it and measures its validation accuracy and exact bytes. The study starts from warm starts
(the best uniform allocation, the projection and a sensitivity-guided allocation). Random search is
the same study with Optuna's random sampler and no warm starts.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from typing import ClassVar

import optuna
import torch
from torch import nn

from autocompress.engine import evaluate
from autocompress.errors import TrainingDivergedError
from autocompress.pipeline import finetune_under_plan_
from autocompress.plan import Plan
from autocompress.search import (
    WARM_START_ATTR,
    SearchContext,
    SearchOutcome,
    SearchSettings,
    Strategy,
    StudyFacts,
    TrialRecord,
    best_feasible_trial,
    best_uniform_plan,
    claim_slot,
    finetune_plan,
    finished_trials,
    fit_to_budget,
    local_workers,
    measure_within_budget,
    optimize,
    outcome_of,
    register_strategy,
    sensitivity_plan,
    worker_name,
    write_best,
    write_best_so_far,
)
from autocompress.strategies._single import projection_plan
from autocompress.units import format_size

SENSITIVITY_IMAGES = 1000  # validation images behind the sensitivity warm start
PRUNING_IMAGES = 1000  # validation images behind each intermediate report
REPORTS_PER_TRIAL = 4


class BoStrategy(Strategy):
    name = "bo"
    summary = "per-layer sparsity and bits by Bayesian optimisation (an Optuna study), in-parallel pruning-quantization (CLIP-Q)"
    hyperparameters: ClassVar[tuple[str, ...]] = ("target size", "trials", "epochs per trial", "final epochs", "learning rate",
                                                  "sampler", "pruner", "max sparsity", "min bits", "max bits")

    def describe(self, settings: SearchSettings) -> str:
        return (f"running to {settings.trials} trials; target {format_size(settings.target_bytes)}; sampler "
                f"{settings.sampler}, pruner {settings.pruner}; {settings.epochs_per_trial:g} epoch(s) of fine-tuning per trial")

    def budget_settings(self, settings: SearchSettings, *, epochs: float, trials: int) -> SearchSettings:
        """Half of the budget spread over the trials, half for the final fine-tune."""
        return dataclasses.replace(settings, trials=trials, epochs_per_trial=epochs / 2 / trials, final_epochs=epochs / 2,
                                   space="absolute", warm_start=True)

    def run(self, context: SearchContext) -> SearchOutcome:
        settings, study, folder = context.settings, context.opened_study, context.settings.study_dir
        use_relative_space(context)
        if should_warm_start(study, context.study_created, settings):
            queued = enqueue_warm_starts(study, context)
            context.log(f"warm start: queued {', '.join(queued) or 'nothing (no uniform plan fits)'}")
        with local_workers(settings, log=context.log):
            optimize(study, lambda trial: run_trial(trial, context), trials=settings.trials,
                     timeout_seconds=settings.timeout_seconds, interrupt=context.interrupt,
                     on_trial_end=lambda s, _: write_best_so_far(s, folder, settings.model, settings.target_bytes))
        write_best_so_far(study, folder, settings.model, settings.target_bytes)  # other workers' trials may have ended after ours
        if settings.worker:
            return report_worker_done(context)
        return finalize(context)


class RandomStrategy(BoStrategy):
    """The BO study with Optuna's random sampler and no warm starts: the baseline a search must beat."""

    name = "random"
    summary = "per-layer sparsity and bits by random search (the BO study's trials, no model, no warm starts)"
    hyperparameters = ("target size", "trials", "epochs per trial", "final epochs", "learning rate", "max sparsity",
                       "min bits", "max bits")

    def prepare(self, settings: SearchSettings) -> SearchSettings:
        return dataclasses.replace(settings, sampler="random", warm_start=False)


def use_relative_space(context: SearchContext) -> None:
    """``--space relative``: search shifts around the projection plan (the best uniform plan where there is
    no projection). The anchor is a function of the baseline, the bounds and the target, so a resumed
    study gets the same one."""
    if context.settings.space != "relative":
        return
    anchor = projection_plan(context) or best_uniform_plan(context.sizes, context.space, context.target_bytes)
    if anchor is None:
        context.log("relative space: no uniform plan fits the target, so the search uses absolute values")
        return
    context.space = context.space.around(anchor)
    head = next(iter(anchor.layers.values()))
    context.log(f"relative space: shifts of +-{context.space.sparsity_shift:g} sparsity and +-{context.space.bits_shift} "
                f"bits around the projection warm start (first layer: sparsity {head.sparsity:.3f}, {head.bits} bits)")


def should_warm_start(study: optuna.Study, created: bool, settings: SearchSettings) -> bool:
    """Queue warm starts in a study this process created, or in an empty one whose creator left no
    word on them (a study made by an older version)."""
    if not settings.warm_start:
        return False
    return created or (not study.trials and WARM_START_ATTR not in study.user_attrs)


def warm_start_plans(context: SearchContext) -> list[tuple[str, Plan]]:
    """The plans every study starts with, by strategy name: the best uniform allocation, the
    distortion-minimising projection and a sensitivity-guided allocation (each when it exists)."""
    space = dataclasses.replace(context.space, anchor=None)
    uniform = best_uniform_plan(context.sizes, space, context.target_bytes)
    if uniform is None:
        return []
    plans = [("uniform-warmstart", uniform)]
    projected = projection_plan(context)
    if projected is not None:
        plans.append(("projection-warmstart", projected))
    subset = context.splits.val.subset(torch.arange(min(SENSITIVITY_IMAGES, len(context.splits.val))))

    def score(candidate: nn.Module) -> float:
        return evaluate(candidate, subset, device=context.device)

    guided = sensitivity_plan(context.sizes, space, context.target_bytes, uniform, score)
    if guided is not None:
        plans.append(("sensitivity-warmstart", guided))
    return plans


def enqueue_warm_starts(study: optuna.Study, context: SearchContext) -> list[str]:
    """Queue the warm-start plans that the space can express as the first trials (a relative
    space holds only the plans within its shifts of its anchor)."""
    queued: list[str] = []
    for strategy, plan in warm_start_plans(context):
        if context.space.represents(plan):
            study.enqueue_trial(context.space.params_of(plan), user_attrs={"strategy": strategy}, skip_if_exists=True)
            queued.append(strategy)
    return queued


def run_trial(trial: optuna.Trial, context: SearchContext) -> float:
    """Propose, fit to the budget, fine-tune with in-parallel pruning-quantization, measure."""
    started = time.perf_counter()
    settings = context.settings
    claim_slot(trial, settings.trials)
    strategy = trial.user_attrs.get("strategy", settings.sampler)  # a warm start was queued with its name
    TrialRecord(strategy=strategy, worker=worker_name(), target_bytes=context.target_bytes).write(trial)
    proposal = context.space.suggest(trial, model=context.model_spec)
    plan = fit_to_budget(context.sizes, proposal, context.space, context.target_bytes)
    if plan is None:  # cannot happen within the space once the target was checked; kept as a guard
        TrialRecord(feasible=False, constraint=[1.0]).write(trial)
        return 0.0
    TrialRecord(repaired=plan is not proposal).write(trial)
    model = copy.deepcopy(context.baseline)
    report = pruning_reports(trial, model, context, started) if settings.pruner != "none" else None

    def on_step(step: int) -> None:
        context.interrupt.check()
        if report is not None:
            report(step)

    try:
        finetune_under_plan_(model, plan, context.splits.train, device=context.device, epochs=settings.epochs_per_trial,
                             lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed + trial.number,
                             progress=False, on_step=on_step)
    except TrainingDivergedError as error:  # the study catches it and marks the trial failed; say why
        trial.set_user_attr("fail_reason", str(error))
        raise
    compressed = measure_within_budget(model, plan, context)
    TrialRecord.measured(compressed, target_bytes=context.target_bytes, wall_seconds=time.perf_counter() - started).write(trial)
    return float(compressed.val_accuracy or 0.0)


def pruning_reports(trial: optuna.Trial, model: nn.Module, context: SearchContext, started: float) -> Callable[[int], None]:
    """A step callback that reports accuracy on a fixed validation subset ``REPORTS_PER_TRIAL``
    times during fine-tuning (fractional epochs included) and prunes the trial when told to."""
    settings = context.settings
    steps_per_epoch = max(len(context.splits.train) // settings.batch_size, 1)
    total_steps = math.ceil(settings.epochs_per_trial * steps_per_epoch)
    every = max(total_steps // REPORTS_PER_TRIAL, 1)
    subset = context.splits.val.subset(torch.arange(min(PRUNING_IMAGES, len(context.splits.val))))

    def on_step(step: int) -> None:
        if step % every or step >= total_steps:
            return
        accuracy = evaluate(model, subset, device=context.device)
        trial.report(accuracy, step=step)
        if trial.should_prune():
            # the fitted plan is within budget by its estimate
            TrialRecord(wall_seconds=time.perf_counter() - started, constraint=[0.0]).write(trial)
            raise optuna.TrialPruned(f"accuracy {accuracy:.4f} on {len(subset)} validation images at step {step}")

    return on_step


def report_worker_done(context: SearchContext) -> SearchOutcome:
    """A --worker leaves the final fine-tune and the files to the process run without --worker."""
    study = context.opened_study
    best = best_feasible_trial(study)
    found = "no feasible trial" if best is None else (
        f"best feasible trial {best.number}: val {best.value:.2%}, {TrialRecord.of(best).packed_bytes:,} B")
    context.log(f"worker done: {len(finished_trials(study))} finished trial(s) in the study, {found}. The final fine-tune and "
                "best.yaml/best.acz come from the same command without --worker (or `autocompress report` for the tables)")
    return SearchOutcome.empty(context)


def finalize(context: SearchContext) -> SearchOutcome:
    """Fine-tune the best feasible trial's plan for ``final_epochs``, then write best.yaml and best.acz."""
    settings, study, folder = context.settings, context.opened_study, context.settings.study_dir
    best = best_feasible_trial(study)
    if best is None:
        context.log("no feasible trial finished yet; rerun the same command to continue the study")
        return SearchOutcome.empty(context)
    plan = TrialRecord.of(best).plan_for(context.model_spec)
    teacher = f", distilled from the baseline at T={settings.distill_temperature:g}" if settings.distill else ""
    context.log(f"final fine-tune of trial {best.number} ({settings.final_epochs:g} epochs{teacher})")
    model = copy.deepcopy(context.baseline)
    finetune_plan(model, plan, context)
    compressed = measure_within_budget(model, plan, context, measure_test=True)
    final_plan = write_best(folder, compressed, context, trial_number=best.number,
                            extra={"search_val_accuracy": round(float(best.value or 0.0), 4)})
    StudyFacts(final={key: final_plan.result[key] for key in ("packed_bytes", "accuracy", "trial")}).write(study)
    return outcome_of(context, final_plan, folder)


register_strategy(BoStrategy())
register_strategy(RandomStrategy())
