"""The ADMM mode as a run over one or more targets, each recorded as a trial of an Optuna study.

Every target is one trial (``strategy: admm``): its value is the validation
accuracy of the hard, fine-tuned model, and it carries the same user attributes
as a BO trial (packed bytes, per-layer plan, ...), so ``autocompress report``,
the Pareto files and the dashboard treat both modes alike; give both the same
``--study-name`` to see them in one study. A target whose trial is complete is
skipped when the command is run again; an interrupted target is marked failed
and starts over.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from pathlib import Path

import optuna
import torch
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import TrialState
from torch import nn
from tqdm.auto import tqdm

from autocompress.data import DataSplits
from autocompress.engine import evaluate
from autocompress.errors import TrainingDivergedError
from autocompress.pipeline import finetune_under_plan_, harden_and_measure
from autocompress.search._admm import AdmmSchedule, AdmmState, admm_train_
from autocompress.search._budget import BudgetCheck
from autocompress.search._projection import Projection
from autocompress.search._settings import SearchSettings
from autocompress.search._space import SearchSpace
from autocompress.search._study import PRUNING_IMAGES, SearchContext, open_study, record_result
from autocompress.units import format_size

STRATEGY = "admm"


def target_folder(settings: SearchSettings, target_bytes: int) -> Path:
    """Where a target's best.yaml and best.acz go: the study folder, or one sub-folder per target of a sweep."""
    if len(settings.resolved_targets) == 1:
        return settings.study_dir
    return settings.study_dir / "targets" / f"{target_bytes}B"


def run_admm(settings: SearchSettings, baseline: nn.Module, splits: DataSplits, space: SearchSpace, device: torch.device,
             budgets: list[BudgetCheck], *, log=print):  # noqa: ANN001
    """Run ADMM for every target not done yet; write each target's files, then the study's report."""
    from autocompress.report import summary_table, trials_frame, write_study_report
    from autocompress.search._run import SearchOutcome, describe_study, write_best

    schedule = settings.admm_schedule()
    study, _ = open_study(settings)
    first = SearchContext(settings, baseline, splits, space, device, settings.model)
    with first.interrupt:
        describe_study(study, first, log=log)
        study.set_user_attr("targets", settings.resolved_targets)
        outcome = SearchOutcome(settings.study_dir, settings.resolved_study_name, settings.resolved_storage, None, None)
        for budget in budgets:
            target = budget.target_bytes
            if budget.trivial:
                log(f"target {format_size(target)} is at least the uncompressed size {format_size(budget.uncompressed_bytes)}: "
                    "nothing to compress, skipped")
                continue
            done = completed_trial(study, target)
            if done is not None:
                log(f"target {format_size(target)}: trial {done.number} already complete "
                    f"(val {done.value:.2%}, {done.user_attrs['packed_bytes']:,} B); skipped")
                continue
            context = SearchContext(dataclasses.replace(settings, target_bytes=target), baseline, splits, space, device,
                                    settings.model, interrupt=first.interrupt)
            log(f"ADMM at {format_size(target)}: {schedule.epochs:g} epoch(s) with {schedule.projections()} projections, "
                f"rho {schedule.rho_start:g} -> {schedule.rho_end:g}, then {settings.final_epochs:g} epoch(s) with the plan hard")
            result = admm_trial(study, context, schedule, log=log)
            if result is None:
                continue
            trial_number, compressed = result
            folder = target_folder(settings, target)
            plan = write_best(folder, compressed, context, study, trial_number=trial_number, extra={"mode": STRATEGY})
            log(f"{folder / 'best.acz'}: {format_size(plan.result['packed_bytes'])} (target {format_size(target)}), "
                f"test top-1 {plan.result['accuracy']['test']:.2%}")
            if outcome.best_plan is None:
                outcome.best_plan, outcome.packed_path = plan, folder / "best.acz"
        write_study_report(study, settings.study_dir)
        log(summary_table(trials_frame(study), settings.target_bytes, study.user_attrs.get("baseline_accuracy")))
        return outcome


def completed_trial(study: optuna.Study, target_bytes: int):  # noqa: ANN201
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get("strategy") == STRATEGY and trial.user_attrs.get("target_bytes") == target_bytes:
            return trial
    return None


def admm_trial(study: optuna.Study, context: SearchContext, schedule: AdmmSchedule, *, log=print):  # noqa: ANN001, ANN201
    """One ADMM run as one trial; returns (trial number, the hard measured model), or None if it diverged."""
    started = time.perf_counter()
    with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for Study.optimize; this trial sends its own
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    trial.set_user_attr("strategy", STRATEGY)
    trial.set_user_attr("target_bytes", context.target_bytes)
    model = copy.deepcopy(context.baseline)
    subset = context.splits.val.subset(torch.arange(min(PRUNING_IMAGES, len(context.splits.val))))

    def on_projection(index: int, projection: Projection, state: AdmmState) -> None:
        accuracy = hard_accuracy(model, state, subset, context.device)
        trial.report(accuracy, step=index)
        bits = [setting.bits for setting in projection.plan.layers.values()]
        tqdm.write(f"  projection {index}: {projection.packed_bytes:,} B, bits {min(bits)}-{max(bits)}, "
                   f"|W-Z|/|W| {state.residual():.3f}, rho {state.rho:.3g}, Z's val top-1 {accuracy:.2%} on {len(subset)} images")

    try:
        with get_heartbeat_thread(trial._trial_id, study._storage):  # other workers see it is alive
            plan, masks = admm_train_(model, context.splits.train, space=context.space, target_bytes=context.target_bytes,
                                      model_spec=context.model_spec, schedule=schedule, device=context.device,
                                      seed=context.settings.seed, on_step=context.interrupt.check, on_projection=on_projection)
            log(f"  hard plan: {plan_line(plan)}; fine-tuning it with the sparsity pattern fixed")
            finetune_under_plan_(model, plan, context.splits.train, device=context.device, epochs=context.settings.final_epochs,
                                 lr=context.settings.lr, batch_size=context.settings.batch_size, seed=context.settings.seed,
                                 on_step=context.interrupt.check, masks=masks,
                                 distillation=context.settings.final_distillation(context.baseline))
            compressed = harden_and_measure(model, plan, model_spec=context.model_spec, num_classes=context.splits.num_classes,
                                            device=context.device, splits=context.splits, measure_test=True)
    except TrainingDivergedError as error:
        trial.set_user_attr("fail_reason", str(error))
        study.tell(trial, state=TrialState.FAIL)
        log(f"  failed: {error}")
        return None
    except BaseException:
        trial.set_user_attr("fail_reason", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        raise
    record_result(trial, compressed, context, started)
    trial.set_user_attr("test_accuracy", compressed.test_accuracy)
    study.tell(trial, float(compressed.val_accuracy))
    return trial.number, compressed


def hard_accuracy(model: nn.Module, state: AdmmState, images, device: torch.device) -> float:  # noqa: ANN001
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


def plan_line(plan) -> str:  # noqa: ANN001
    settings = list(plan.layers.values())
    return (f"sparsity {min(s.sparsity for s in settings):.2f}-{max(s.sparsity for s in settings):.2f}, "
            f"bits {min(s.bits for s in settings)}-{max(s.bits for s in settings)}")

