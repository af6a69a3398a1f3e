"""The ADMM mode (Yang et al. 2020) over one or more targets, each recorded as one trial of the study.

Every target is one trial (``strategy: admm``): its value is the validation accuracy of the hard,
fine-tuned model, and it carries the same :class:`TrialRecord` as a BO trial, so ``report``, the
Pareto files and the dashboard treat both modes alike; give both the same ``--study-name`` to see
them in one study. A target whose trial is complete is skipped when the command is run again; an
interrupted target is marked failed and starts over.
"""

from __future__ import annotations

import copy
import functools
import time
from pathlib import Path

import optuna
import torch
from torch import nn
from tqdm.auto import tqdm

from autocompress.allocation import Projection
from autocompress.data import TensorSet
from autocompress.engine import evaluate
from autocompress.pipeline import CompressedModel, harden_and_measure
from autocompress.plan import Plan
from autocompress.search import SearchContext, SearchOutcome, Strategy, finetune_plan, outcome_of, worker_name, write_best
from autocompress.settings import SearchSettings
from autocompress.strategies._admm_train import AdmmSchedule, AdmmState, admm_train_
from autocompress.study import StudyFacts, TrialRecord, completed_trial, run_one_trial
from autocompress.units import format_size

REPORT_IMAGES = 1000  # validation images behind each projection's reported accuracy


class AdmmStrategy(Strategy):
    name = "admm"
    scopes = ("admm",)
    sweeps_targets = True
    summary = "per-layer allocation learned under the size constraint by ADMM (Yang et al. 2020), then fine-tuned hard"
    training_phase = "admm_epochs"  # compare: half the budget here, half for the hard fine-tune
    hyperparameters = ("target size", "ADMM epochs", "projections per epoch", "rho start", "rho end", "final epochs",
                       "learning rate", "max sparsity", "min bits", "max bits")

    def describe(self, settings: SearchSettings) -> str:
        schedule = AdmmSchedule.of(settings)
        return (f"ADMM mode, targets {', '.join(format_size(target) for target in settings.resolved_targets)}: "
                f"{schedule.epochs:g} epoch(s) with {schedule.projections()} projections, rho {schedule.rho_start:g} -> "
                f"{schedule.rho_end:g}, then {settings.final_epochs:g} epoch(s) with the plan hard")

    def run(self, context: SearchContext) -> SearchOutcome:
        study = context.opened_study
        StudyFacts(targets=context.settings.resolved_targets).write(study)
        outcome = SearchOutcome.empty(context)
        for budget in context.budgets:
            target = budget.target_bytes
            if budget.trivial:
                context.log(f"target {format_size(target)} is at least the uncompressed size "
                            f"{format_size(budget.uncompressed_bytes)}: nothing to compress, skipped")
                continue
            done = completed_trial(study, self.name, target)
            if done is not None:
                context.log(f"target {format_size(target)}: trial {done.number} already complete "
                            f"(val {done.value:.2%}, {TrialRecord.of(done).packed_bytes:,} B); skipped")
                continue
            aimed = context.for_target(target)
            context.log(f"ADMM at {format_size(target)}")
            result = run_one_trial(study, functools.partial(admm_trial, context=aimed))
            if result is None:
                context.log("  failed: the training diverged (loss not finite); try a lower --lr or --rho-end")
                continue
            trial_number, compressed = result
            folder = target_folder(context.settings, target)
            plan = write_best(folder, compressed, aimed, trial_number=trial_number, extra={"mode": self.name})
            context.log(f"{folder / 'best.acz'}: {format_size(plan.result['packed_bytes'])} (target {format_size(target)}), "
                        f"test top-1 {plan.result['accuracy']['test']:.2%}")
            if outcome.best_plan is None:
                outcome = outcome_of(context, plan, folder)
        return outcome


def target_folder(settings: SearchSettings, target_bytes: int) -> Path:
    """Where a target's best.yaml and best.acz go: the study folder, or one sub-folder per target of a sweep."""
    if len(settings.resolved_targets) == 1:
        return settings.study_dir
    return settings.study_dir / "targets" / f"{target_bytes}B"


def admm_trial(trial: optuna.Trial, context: SearchContext) -> tuple[float, CompressedModel]:
    """One ADMM run (ADMM phase, then the hard fine-tune) as one trial: its value and the measured model."""
    started = time.perf_counter()
    TrialRecord(strategy=AdmmStrategy.name, worker=worker_name(), target_bytes=context.target_bytes).write(trial)
    model = copy.deepcopy(context.baseline)
    subset = context.splits.val.subset(torch.arange(min(REPORT_IMAGES, len(context.splits.val))))

    def on_projection(index: int, projection: Projection, state: AdmmState) -> None:
        accuracy = hard_accuracy(model, state, subset, context.device)
        trial.report(accuracy, step=index)
        bits = [setting.bits for setting in projection.plan.layers.values()]
        tqdm.write(f"  projection {index}: {projection.packed_bytes:,} B, bits {min(bits)}-{max(bits)}, "
                   f"|W-Z|/|W| {state.residual():.3f}, rho {state.rho:.3g}, Z's val top-1 {accuracy:.2%} on {len(subset)} images")

    plan, masks = admm_train_(model, context.splits.train, space=context.space, target_bytes=context.target_bytes,
                              model_spec=context.model_spec, schedule=AdmmSchedule.of(context.settings),
                              device=context.device, seed=context.settings.seed, on_step=context.interrupt.check,
                              on_projection=on_projection)
    context.log(f"  hard plan: {plan_line(plan)}; fine-tuning it with the sparsity pattern fixed")
    finetune_plan(model, plan, context, masks=masks)
    compressed = harden_and_measure(model, plan, model_spec=context.model_spec, num_classes=context.splits.num_classes,
                                    device=context.device, splits=context.splits, measure_test=True)
    TrialRecord.measured(compressed, target_bytes=context.target_bytes, wall_seconds=time.perf_counter() - started,
                         strategy=AdmmStrategy.name).write(trial)
    return float(compressed.val_accuracy or 0.0), compressed


def hard_accuracy(model: nn.Module, state: AdmmState, images: TensorSet, device: torch.device) -> float:
    """Accuracy of the model with its plan layers replaced by Z (BN statistics as they are)."""
    with torch.no_grad():
        saved = {name: weight.detach().clone() for name, weight in state.weights.items()}
        try:
            for name, weight in state.weights.items():
                weight.copy_(state.z[name])
            return evaluate(model, images, device=device)
        finally:
            for name, weight in state.weights.items():
                weight.copy_(saved[name])


def plan_line(plan: Plan) -> str:
    settings = list(plan.layers.values())
    return (f"sparsity {min(s.sparsity for s in settings):.2f}-{max(s.sparsity for s in settings):.2f}, "
            f"bits {min(s.bits for s in settings)}-{max(s.bits for s in settings)}")
