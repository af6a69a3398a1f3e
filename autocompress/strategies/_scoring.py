"""How BO trials are scored, and how the plan for the final fine-tune is chosen from them (``--trial-score``).

* ``val_accuracy``: each trial fine-tunes its plan for ``epochs_per_trial`` with in-parallel
  pruning-quantization and is scored by validation accuracy (median-pruned on the way). The best trial
  gets the final fine-tune. This is CLIP-Q's recipe, and costs a fraction of an epoch per trial.
* ``kl``: each trial is scored in seconds by the cheap score (KL to the baseline after BN re-estimation,
  no training: ``PlanScorer``). Three fidelity levels follow: every trial gets the cheap score; the
  ``finetune_top`` best plans get the short fine-tune and are scored again, as trials of the companion
  study ``<name>.finetune``; the best of those gets the final fine-tune, recorded there too.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import optuna
import torch
from torch import nn

from autocompress.allocation import PlanScorer, ScoreSettings
from autocompress.engine import evaluate
from autocompress.errors import AutocompressError, TrainingDivergedError
from autocompress.pipeline import CompressedModel, finetune_under_plan_
from autocompress.plan import Plan
from autocompress.search import SearchContext, finetune_plan, measure_within_budget, worker_name
from autocompress.settings import TRIAL_SCORES, TrialObjective
from autocompress.strategies._checks import objective_of
from autocompress.strategies._proposals import Proposer
from autocompress.study import TrialRecord, best_feasible_trial, claim_slot, open_study, ranked_feasible_trials, run_one_trial

PRUNING_IMAGES = 1000  # validation images behind each intermediate report
REPORTS_PER_TRIAL = 4


@dataclass
class Chosen:
    """The plan that gets the final fine-tune, the scored trial it came from, and what was measured on the way."""

    plan: Plan
    trial_number: int
    facts: dict[str, Any] = field(default_factory=dict)  # written into best.yaml's result


class TrialScoring(ABC):
    """One way of scoring BO trials; the study's direction follows ``objective_of(settings)``."""

    name: ClassVar[str]
    candidates_setting: ClassVar[str]  # the setting that counts the trials which train (a fine-tune each)

    def __init__(self, context: SearchContext, proposer: Proposer) -> None:
        self.context = context
        self.proposer = proposer

    @abstractmethod
    def objective(self, trial: optuna.Trial) -> float:
        """Propose the trial's plan, measure it, record it, return its score."""

    @abstractmethod
    def choose(self) -> Chosen | None:
        """The plan for the final fine-tune (None: no feasible trial yet)."""

    def final(self, chosen: Chosen) -> CompressedModel:
        """The final fine-tune of the chosen plan, measured with the test split (it reports, never chooses)."""
        model = copy.deepcopy(self.context.baseline)
        finetune_plan(model, chosen.plan, self.context)
        return measure_within_budget(model, chosen.plan, self.context, measure_test=True)

    def start_record(self, trial: optuna.Trial) -> tuple[Plan | None, float]:
        """Claim the trial's slot, record who runs it, propose its plan; (the plan, the start time)."""
        started = time.perf_counter()
        context = self.context
        claim_slot(trial, context.settings.trials)
        strategy = trial.user_attrs.get("strategy", context.settings.sampler)  # a warm start was queued with its name
        TrialRecord(strategy=strategy, worker=worker_name(), target_bytes=context.target_bytes).write(trial)
        plan, repaired = self.proposer.propose(trial)
        if plan is None:  # cannot happen once the target was checked; kept as a guard
            TrialRecord(feasible=False, constraint=[1.0]).write(trial)
        else:
            TrialRecord(repaired=repaired).write(trial)
        return plan, started


class FineTunedAccuracy(TrialScoring):
    name = "val_accuracy"
    candidates_setting = "trials"  # every trial fine-tunes

    def objective(self, trial: optuna.Trial) -> float:
        context, settings = self.context, self.context.settings
        plan, started = self.start_record(trial)
        if plan is None:
            return 0.0
        model = copy.deepcopy(context.baseline)
        report = pruning_reports(trial, model, context, started) if settings.pruner != "none" else None

        def on_step(step: int) -> None:
            context.interrupt.check()
            if report is not None:
                report(step)

        try:
            finetune_under_plan_(model, plan, context.splits.train, device=context.device, epochs=settings.epochs_per_trial,
                                 lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed + trial.number,
                                 progress=False, on_step=on_step, precision=settings.precision)
        except TrainingDivergedError as error:  # the study catches it and marks the trial failed; say why
            trial.set_user_attr("fail_reason", str(error))
            raise
        compressed = measure_within_budget(model, plan, context)
        TrialRecord.measured(compressed, target_bytes=context.target_bytes,
                             wall_seconds=time.perf_counter() - started).write(trial)
        return float(compressed.val_accuracy or 0.0)

    def choose(self) -> Chosen | None:
        best = best_feasible_trial(self.context.opened_study)
        if best is None:
            return None
        plan = TrialRecord.of(best).plan_for(self.context.model_spec)
        return Chosen(plan, best.number, {"search_val_accuracy": round(float(best.value or 0.0), 4)})


class CheapKL(TrialScoring):
    name = "kl"
    candidates_setting = "finetune_top"  # trials train nothing; the best few are fine-tuned

    def __init__(self, context: SearchContext, proposer: Proposer) -> None:
        super().__init__(context, proposer)
        settings = context.settings
        self.scorer = PlanScorer(context.baseline, context.splits.train, device=context.device,
                                 settings=ScoreSettings(images=settings.score_images, bn_images=settings.score_bn_images,
                                                       seed=settings.split_seed))

    def objective(self, trial: optuna.Trial) -> float:
        context = self.context
        plan, started = self.start_record(trial)
        if plan is None:
            return math.inf
        context.interrupt.check()
        score = self.scorer.score_plan(plan)
        TrialRecord.sized(plan, context.sizes.estimate(plan), target_bytes=context.target_bytes,
                          wall_seconds=time.perf_counter() - started, kl_to_baseline=score.kl, agreement=score.agreement,
                          fidelity="score").write(trial)
        return score.kl

    def choose(self) -> Chosen | None:
        """Fine-tune the short-listed plans briefly (each a trial of the companion study, so a rerun goes on where
        it stopped) and pick the one whose score after that fine-tune is best."""
        finetuned = self._short_list()
        return self._chosen(finetuned[0]) if finetuned else None

    def shortlist(self, ranked: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
        """Which of the distinct feasible plans (best score first) get the short fine-tune: the ``finetune_top``
        best. A rule of another kind is a subclass that overrides this method, registered with
        :func:`register_scoring` under a name of its own (``trial_score`` then names it)."""
        return ranked[: self.context.settings.finetune_top]

    def _chosen(self, finetuned: optuna.trial.FrozenTrial, **facts: Any) -> Chosen:
        record = TrialRecord.of(finetuned)
        search_score = self.context.opened_study.get_trials(deepcopy=False)[record.parent or 0].value
        return Chosen(record.plan_for(self.context.model_spec), record.parent or 0,
                      {"search_kl": round(float(search_score or 0.0), 5), "finetune_kl": round(float(finetuned.value or 0.0), 5),
                       "finetune_val_accuracy": record.val_accuracy, **facts})

    def _short_list(self) -> list[optuna.trial.FrozenTrial]:
        """The short fine-tunes of today's short list (run where missing), best first. Only today's short list
        competes: a plan an earlier run of the study fine-tuned (with a larger ``finetune_top``, say) is not
        chosen unless it is on today's list too."""
        context, settings = self.context, self.context.settings
        candidates = self.shortlist(distinct_plans(ranked_feasible_trials(context.opened_study)))
        if not candidates:
            return []
        companion, _ = open_study(settings, objective_of(settings), companion=True)
        complete = companion.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        done = {TrialRecord.of(trial).parent for trial in self._finetuned_under_todays_rule(complete)}
        for number, scored in enumerate(candidates, start=1):
            if scored.number in done:
                continue
            context.log(f"fine-tune {number} of {len(candidates)}: trial {scored.number} (score {scored.value:.4f}), "
                        f"{settings.epochs_per_trial:g} epoch(s)")
            companion.enqueue_trial(dict(scored.params), user_attrs={"strategy": "finetune"})
            run_one_trial(companion, functools.partial(self._short_finetune, scored=scored))
        listed = {scored.number for scored in candidates}
        finetuned = [trial for trial in self._finetuned_under_todays_rule(ranked_feasible_trials(companion))
                     if TrialRecord.of(trial).parent in listed]
        context.log("after the short fine-tune (KL): " + ", ".join(
            f"trial {TrialRecord.of(trial).parent} {float(trial.value or 0.0):.4f}" for trial in finetuned))
        return finetuned

    def _finetuned_under_todays_rule(self, trials: Iterable[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
        """The short fine-tunes among ``trials`` (other fidelities dropped) made as today's are (order kept): with
        the data order of their own (seed + parent) and not distilled. An earlier version could fine-tune with
        shared seeds or distilled; those are neither reused nor compared."""
        kept = []
        for trial in trials:
            record = TrialRecord.of(trial)
            if record.fidelity != "finetune":
                continue
            parent = record.parent or 0
            recorded = record.extra.get("finetune_seeds", [self.context.settings.seed + parent])
            if list(recorded) == [self.context.settings.seed + parent] and not record.extra.get("finetune_distilled", False):
                kept.append(trial)
        return kept

    def _short_finetune(self, trial: optuna.Trial, scored: optuna.trial.FrozenTrial) -> tuple[float, None]:
        context, settings = self.context, self.context.settings
        started = time.perf_counter()
        self.proposer.suggest_only(trial)  # the scored trial's parameters, for the dashboard
        plan = TrialRecord.of(scored).plan_for(context.model_spec)
        seed = settings.seed + scored.number
        TrialRecord(strategy="finetune", worker=worker_name(), target_bytes=context.target_bytes, parent=scored.number,
                    fidelity="finetune", extra={"finetune_seeds": [seed]}).write(trial)
        model = copy.deepcopy(context.baseline)
        finetune_under_plan_(model, plan, context.splits.train, device=context.device, epochs=settings.epochs_per_trial,
                             lr=settings.lr, batch_size=settings.batch_size, seed=seed, progress=False,
                             on_step=context.interrupt.check, precision=settings.precision)
        compressed = measure_within_budget(model, plan, context)
        score = self.scorer.score_model(compressed.model)
        TrialRecord.measured(compressed, target_bytes=context.target_bytes, wall_seconds=time.perf_counter() - started,
                             kl_to_baseline=score.kl, agreement=score.agreement).write(trial)
        return score.kl, None

    def final(self, chosen: Chosen) -> CompressedModel:
        """The final fine-tune, recorded as a trial of the companion study (fidelity ``final``)."""
        context = self.context
        companion, _ = open_study(context.settings, objective_of(context.settings), companion=True)
        scored = context.opened_study.get_trials(deepcopy=False)[chosen.trial_number]
        companion.enqueue_trial(dict(scored.params), user_attrs={"strategy": "final"})

        def work(trial: optuna.Trial) -> tuple[float, CompressedModel]:
            started = time.perf_counter()
            self.proposer.suggest_only(trial)
            TrialRecord(strategy="final", worker=worker_name(), target_bytes=context.target_bytes,
                        parent=chosen.trial_number, fidelity="final").write(trial)
            compressed = TrialScoring.final(self, chosen)
            score = self.scorer.score_model(compressed.model)
            TrialRecord.measured(compressed, target_bytes=context.target_bytes, wall_seconds=time.perf_counter() - started,
                                 kl_to_baseline=score.kl, agreement=score.agreement).write(trial)
            return score.kl, compressed

        result = run_one_trial(companion, work)
        if result is None:
            raise TrainingDivergedError("the final fine-tune diverged (loss not finite); try a lower --lr")
        return result[1]


def distinct_plans(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials in order, each plan kept once (the first trial that measured it)."""
    seen: set[str] = set()
    unique = []
    for trial in trials:
        key = json.dumps(TrialRecord.of(trial).plan, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(trial)
    return unique


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


SCORINGS: dict[str, type[TrialScoring]] = {scoring.name: scoring for scoring in (FineTunedAccuracy, CheapKL)}


def register_scoring(scoring: type[TrialScoring], objective: TrialObjective) -> type[TrialScoring]:
    """Add a way of scoring trials (``trial_score`` then accepts its name), e.g. a subclass of :class:`CheapKL` with
    another :meth:`CheapKL.shortlist` rule; ``objective`` is its metric and direction (a KL-scored one keeps
    ``TRIAL_SCORES['kl']``'s metric, so the kl settings apply to it). Returns ``scoring``."""
    if scoring.name in SCORINGS and SCORINGS[scoring.name] is not scoring:
        raise AutocompressError(f"a trial score named {scoring.name!r} is registered already")
    SCORINGS[scoring.name] = scoring
    TRIAL_SCORES[scoring.name] = objective
    return scoring
