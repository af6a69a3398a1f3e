"""The BO search as an Optuna study: one trial = plan -> fit to budget -> fine-tune -> measure.

The study has one objective, validation accuracy (maximised), and the target
size as a hard constraint (``packed_bytes - target <= 0``) through Optuna's
constraints mechanism. Every trial records its exact packed bytes, so the
accuracy/size Pareto front is read off the trials. (A two-objective study
would forbid intermediate reports, and with them every Optuna pruner.)
"""

from __future__ import annotations

import copy
import math
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError
from torch import nn
from tqdm.auto import tqdm

from autocompress.data import DataSplits
from autocompress.engine import evaluate
from autocompress.errors import AutocompressError, TrainingDivergedError
from autocompress.pack import SizeAccountant
from autocompress.pipeline import CompressedModel, finetune_under_plan_, harden_and_measure
from autocompress.plan import LayerSetting, Plan
from autocompress.search._budget import best_uniform_plan, fit_to_budget, sensitivity_plan
from autocompress.search._interrupt import InterruptGuard
from autocompress.search._projection import project_to_budget
from autocompress.search._settings import SearchSettings
from autocompress.search._space import SearchSpace
from autocompress.search._storage import open_storage, redact

METRIC_NAMES = ["val_accuracy"]
CONSTRAINT_NAME = "packed_bytes_over_target"  # feasible when <= 0
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
SENSITIVITY_IMAGES = 1000
PRUNING_IMAGES = 1000  # validation images behind each intermediate report
REPORTS_PER_TRIAL = 4
STORAGE_ATTEMPTS = 3
WARM_START_ATTR = "warm_start"  # study user attribute: whether its creator queued the warm starts
POLL_SECONDS = 2.0  # how often a worker with nothing to start looks at the other workers' trials


@dataclass
class SearchContext:
    """What every trial needs, passed in explicitly."""

    settings: SearchSettings
    baseline: nn.Module
    splits: DataSplits
    space: SearchSpace
    device: torch.device
    model_spec: str
    interrupt: InterruptGuard = field(default_factory=InterruptGuard)  # entered by run_search
    sizes: SizeAccountant = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = SizeAccountant(self.baseline, model_spec=self.model_spec)

    @property
    def target_bytes(self) -> int:
        return self.settings.target_bytes


def constraint_of(trial: FrozenTrial) -> list[float]:
    """Optuna constraint: feasible when <= 0. A trial that never got a size counts as infeasible."""
    return list(trial.user_attrs.get("constraint", [1.0]))


def make_sampler(name: str, *, seed: int, n_startup_trials: int = 10) -> optuna.samplers.BaseSampler:
    """Optuna's own samplers read the constraint each trial sets (``Trial.set_constraint``);
    optuna-integration's BoTorch sampler still takes it as a function."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=True)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "botorch":
        from optuna_integration import BoTorchSampler

        return BoTorchSampler(seed=seed, n_startup_trials=n_startup_trials, constraints_func=constraint_of)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise AutocompressError(f"unknown sampler {name!r}")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def open_study(settings: SearchSettings) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when the storage already holds one of that name (a resumed
    study, or one that other workers share). Also says whether this call created it: only the
    creator queues the warm starts, so workers starting together do not queue them twice."""
    if settings.storage is None:
        settings.study_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_storage
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            storage = open_storage(url, heartbeat_seconds=settings.heartbeat_seconds, max_retries=settings.max_retries)
            study, created = _create_or_load(storage, settings)
            break
        except SQLAlchemyError as error:  # another process is creating the same new storage's tables right now
            if attempt == STORAGE_ATTEMPTS - 1:
                reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
                raise AutocompressError(f"cannot open the storage {redact(url)}: {reason}; check that the server is up "
                                        "and the URL (user, password, host, port, database) is right") from None
            time.sleep(1.0 + attempt)
    if study.metric_names != METRIC_NAMES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(METRIC_NAMES)
    return study, created


def _create_or_load(storage: optuna.storages.BaseStorage, settings: SearchSettings) -> tuple[optuna.Study, bool]:
    sampler = make_sampler(settings.sampler, seed=settings.seed, n_startup_trials=settings.sampler_startup_trials)
    name, pruner = settings.resolved_study_name, make_pruner(settings.pruner)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner), False
    study.set_user_attr(WARM_START_ATTR, settings.warm_start)  # claimed at once: other workers see it was handled
    return study, True


def should_warm_start(study: optuna.Study, created: bool, settings: SearchSettings) -> bool:
    """Queue warm starts in a study this process created, or in an empty one whose creator left no
    word on them (a study made by an older version)."""
    if not settings.warm_start:
        return False
    return created or (not study.trials and WARM_START_ATTR not in study.user_attrs)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED_STATES)


def best_feasible_trial(study: optuna.Study) -> FrozenTrial | None:
    feasible = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if trial.user_attrs.get("feasible") and trial.value is not None
    ]
    return max(feasible, key=lambda trial: (trial.value, -trial.user_attrs["packed_bytes"])) if feasible else None


def plan_from_attrs(trial: FrozenTrial, model_spec: str) -> Plan:
    layers = {name: LayerSetting(**fields) for name, fields in trial.user_attrs["plan"].items()}
    return Plan(layers=layers, model=model_spec)


def projection_plan(context: SearchContext, uniform: Plan) -> Plan | None:
    """The allocation of least weight distortion that fits the exact budget: the ADMM mode's
    projection (two alternating knapsacks, ``project_to_budget``) of the baseline's own weights,
    seeded with the best uniform plan. No training; about 2 s for ResNet-20."""
    space = replace(context.space, anchor=None)
    projected = project_to_budget(context.sizes, space, context.target_bytes, seed=uniform)
    return None if projected is None else projected.plan


def relative_space(context: SearchContext) -> SearchSpace | None:
    """The space as shifts around the projection plan, or the best uniform plan where no projection
    is found (None when no uniform plan fits).

    The anchor is a deterministic function of the baseline, the bounds and the target,
    so a resumed study gets the same one."""
    uniform = best_uniform_plan(context.sizes, context.space, context.target_bytes)
    if uniform is None:
        return None
    return context.space.around(projection_plan(context, uniform) or uniform)


def warm_start_plans(context: SearchContext) -> list[tuple[str, Plan]]:
    """The plans every study starts with, by strategy name: the best uniform allocation, the
    distortion-minimising projection and a sensitivity-guided allocation (each when it exists)."""
    uniform = best_uniform_plan(context.sizes, replace(context.space, anchor=None), context.target_bytes)
    if uniform is None:
        return []
    plans = [("uniform-warmstart", uniform)]
    projected = projection_plan(context, uniform)
    if projected is not None:
        plans.append(("projection-warmstart", projected))
    subset = context.splits.val.subset(torch.arange(min(SENSITIVITY_IMAGES, len(context.splits.val))))

    def score(candidate: nn.Module) -> float:
        return evaluate(candidate, subset, device=context.device)

    guided = sensitivity_plan(context.sizes, context.space, context.target_bytes, uniform, score)
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
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who ran it
    trial.set_user_attr("strategy", trial.user_attrs.get("strategy", settings.sampler))
    proposal = context.space.suggest(trial, model=context.model_spec)
    plan = fit_to_budget(context.sizes, proposal, context.space, context.target_bytes)
    if plan is None:  # cannot happen within the space once the target was checked; kept as a guard
        trial.set_user_attr("constraint", [1.0])
        trial.set_user_attr("feasible", False)
        trial.set_constraint(CONSTRAINT_NAME, 1.0)
        return 0.0
    trial.set_user_attr("repaired", plan is not proposal)
    model = copy.deepcopy(context.baseline)
    report = pruning_reports(trial, model, context, started) if settings.pruner != "none" else None

    def on_step(step: int) -> None:
        context.interrupt.check()
        if report is not None:
            report(step)

    try:
        finetune_under_plan_(
            model,
            plan,
            context.splits.train,
            device=context.device,
            epochs=settings.epochs_per_trial,
            lr=settings.lr,
            batch_size=settings.batch_size,
            seed=settings.seed + trial.number,
            progress=False,
            on_step=on_step,
        )
    except TrainingDivergedError as error:
        trial.set_user_attr("fail_reason", str(error))
        raise
    compressed = measure_within_budget(model, plan, context)
    record_result(trial, compressed, context, started)
    return float(compressed.val_accuracy or 0.0)


def pruning_reports(
    trial: optuna.Trial, model: nn.Module, context: SearchContext, started: float
) -> Callable[[int], None]:
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
            trial.set_user_attr("wall_seconds", time.perf_counter() - started)
            trial.set_constraint(CONSTRAINT_NAME, 0.0)  # the fitted plan is within budget by its estimate
            raise optuna.TrialPruned(f"accuracy {accuracy:.4f} on {len(subset)} validation images at step {step}")

    return on_step


def measure_within_budget(model: nn.Module, plan: Plan, context: SearchContext, *, measure_test: bool = False) -> CompressedModel:
    """Harden and measure; if fine-tuning moved zeros so that the index grew past the budget, refit
    the plan on the fine-tuned weights (a slightly higher sparsity, no retraining)."""
    measure = lambda candidate: harden_and_measure(  # noqa: E731
        model,
        candidate,
        model_spec=context.model_spec,
        num_classes=context.splits.num_classes,
        device=context.device,
        splits=context.splits,
        measure_test=measure_test,
    )
    compressed = measure(plan)
    if compressed.size.total > context.target_bytes:
        fine_tuned_sizes = SizeAccountant(model, model_spec=context.model_spec)
        refitted = fit_to_budget(fine_tuned_sizes, plan, context.space, context.target_bytes)
        if refitted is not None:
            compressed = measure(refitted)
    return compressed


def record_result(trial: optuna.Trial, compressed: CompressedModel, context: SearchContext, started: float) -> None:
    size = compressed.size
    weights = sum(layer.numel for layer in size.layers)
    kept = sum(layer.n_kept for layer in size.layers)
    bits = sum(layer.n_kept * layer.bits for layer in size.layers)
    attributes: dict[str, Any] = {
        "packed_bytes": size.total,
        "feasible": size.total <= context.target_bytes,
        "constraint": [float(size.total - context.target_bytes)],
        "compression_ratio": size.fp32_bytes / size.total,
        "val_accuracy": compressed.val_accuracy,
        "mean_bits": bits / kept if kept else 0.0,
        "sparsity": 1 - kept / weights if weights else 0.0,
        "plan": {name: setting.to_dict() for name, setting in compressed.plan.layers.items()},
        "wall_seconds": time.perf_counter() - started,
    }
    for key, value in attributes.items():
        trial.set_user_attr(key, value)
    trial.set_constraint(CONSTRAINT_NAME, float(size.total - context.target_bytes))


@dataclass(frozen=True)
class TrialCounts:
    """A study's trials by what they mean for the requested count."""

    finished: int  # complete or pruned: these count toward --trials
    running: int  # being run by some worker (or by a dead one, until its heartbeats go stale)
    waiting: int  # queued: warm starts, and retries of trials whose worker died


def trial_counts(study: optuna.Study) -> TrialCounts:
    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    return TrialCounts(finished=sum(state in FINISHED_STATES for state in states),
                       running=states.count(TrialState.RUNNING), waiting=states.count(TrialState.WAITING))


class SurplusTrialError(AutocompressError):
    """Two workers started the study's last trial at the same moment; the later one stands down."""


def claim_slot(trial: optuna.Trial, requested: int) -> None:
    """Refuse a trial that would take the study past ``requested`` finished trials.

    Workers check the counts before they start a trial, but two can pass that check together.
    Trial numbers settle it: of the trials that count or may count (finished or running), the
    ``requested`` lowest-numbered go ahead, and any later one ends at once, marked failed."""
    ahead = trial.study.get_trials(deepcopy=False, states=(*FINISHED_STATES, TrialState.RUNNING))
    if sum(other.number < trial.number for other in ahead) >= requested:
        message = f"the study already has {requested} finished or running trials (another worker started the last one)"
        trial.set_user_attr("fail_reason", message)
        raise SurplusTrialError(message)


def optimize(study: optuna.Study, context: SearchContext, *, on_trial_end: Callable[[optuna.Study, FrozenTrial], None]) -> None:
    """Run trials until the study holds ``settings.trials`` finished ones, or the timeout passes.

    Any number of workers (processes, machines) may run this on one study: the count is the
    study's. A worker starts a trial only while finished + running trials are short of it; when
    the others are running the last ones, it waits for them, so that every worker returns with
    the study complete and reads the same best trial. A worker that died mid-trial stops sending
    heartbeats; its trial turns stale, is marked failed and re-queued (``open_storage``), and a
    waiting worker runs it. ``--timeout`` stops starting trials, as in Optuna."""
    settings = context.settings
    deadline = None if settings.timeout_seconds is None else time.monotonic() + settings.timeout_seconds
    if trial_counts(study).finished >= settings.trials:
        return
    bar = tqdm(total=settings.trials, unit="trial", desc="search", dynamic_ncols=True)

    def callback(current: optuna.Study, trial: FrozenTrial) -> None:
        best = best_feasible_trial(current)
        if best is not None:
            bar.set_postfix_str(f"best feasible val={best.value:.4f} ({best.user_attrs['packed_bytes']:,} B, trial {best.number})")
        on_trial_end(current, trial)
        context.interrupt.check()  # a Ctrl-C the interpreter swallowed stops here, the trial saved

    started_here = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            fail_stale_trials(study)
            counts = trial_counts(study)
            bar.update(min(counts.finished, settings.trials) - bar.n)
            if counts.finished >= settings.trials or started_here >= settings.trials:
                return
            if counts.finished + counts.running >= settings.trials and counts.waiting == 0:
                bar.set_description_str(f"search (waiting for {counts.running} trial(s) of other workers)")
                time.sleep(POLL_SECONDS)
                context.interrupt.check()
                continue
            bar.set_description_str("search")
            started_here += 1
            study.optimize(
                lambda trial: run_trial(trial, context),
                n_trials=1,
                catch=(TrainingDivergedError, SurplusTrialError),
                callbacks=[callback],
                gc_after_trial=True,
            )
    finally:
        bar.close()


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark the trials of dead workers failed (and re-queue them), as Optuna does before each trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def write_best_so_far(study: optuna.Study, folder: Path, model_spec: str, target_bytes: int) -> None:
    """Persist the best feasible plan after every trial (before its final fine-tune)."""
    best = best_feasible_trial(study)
    if best is None:
        return
    plan = plan_from_attrs(best, model_spec)
    plan.target_bytes = target_bytes
    plan.result = {
        "trial": best.number,
        "packed_bytes": best.user_attrs["packed_bytes"],
        "accuracy": {"val": round(float(best.value), 4)},
        "note": "best trial so far, before the final fine-tune",
    }
    plan.save(folder / "best_trial.yaml")
