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
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import optuna
import torch
from torch import nn

from autocompress.engine import evaluate
from autocompress.errors import TrainingDivergedError
from autocompress.pipeline import CompressedModel, finetune_under_plan_
from autocompress.plan import Plan
from autocompress.search import (
    PlanScorer,
    ScoreSettings,
    SearchContext,
    TrialRecord,
    baseline_distillation,
    best_feasible_trial,
    claim_slot,
    final_distillation,
    finetune_plan,
    finetune_state_path,
    measure_within_budget,
    open_study,
    ranked_feasible_trials,
    run_one_trial,
    worker_name,
)
from autocompress.strategies._proposals import Proposer

PRUNING_IMAGES = 1000  # validation images behind each intermediate report
REPORTS_PER_TRIAL = 4


@dataclass
class Chosen:
    """The plan that gets the final fine-tune, the scored trial it came from, and what was measured on the way."""

    plan: Plan
    trial_number: int
    facts: dict[str, Any] = field(default_factory=dict)  # written into best.yaml's result


class TrialScoring(ABC):
    """One way of scoring BO trials; the study's direction follows ``settings.objective``."""

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
                                 settings=settings.score_settings)
        # built before the first trial, so a score set that leaves no fresh images is refused before the search
        self.fresh_scorer = (self.scorer.fresh(settings.rescore_images, seed=settings.split_seed + 1)
                             if settings.rescore_top > 0 else None)

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
        """Fine-tune the ``finetune_top`` best distinct plans briefly (each a trial of the companion study, so a
        rerun goes on where it stopped) and pick the one whose score after that fine-tune is best; with
        ``race_top`` > 1, the best ``race_top`` of them race through the first ``race_epochs`` of the final
        fine-tune and the one closest to the baseline on the validation split is chosen (:meth:`_race`)."""
        settings = self.context.settings
        finetuned = self._short_list()
        if not finetuned:
            return None
        if settings.race_top > 1 and len(finetuned) > 1:
            return self._race(finetuned[: settings.race_top])
        return self._chosen(finetuned[0])

    def _chosen(self, finetuned: optuna.trial.FrozenTrial, **facts: Any) -> Chosen:
        record = TrialRecord.of(finetuned)
        search_score = self.context.opened_study.get_trials(deepcopy=False)[record.parent or 0].value
        if self.context.settings.rescore_top > 0:
            companion, _ = open_study(self.context.settings, companion=True)
            rescored = finished_at(companion, "rescore").get(record.parent)
            if rescored is not None and rescored.value is not None:
                facts = {"rescore_kl": round(float(rescored.value), 5), **facts}
        return Chosen(record.plan_for(self.context.model_spec), record.parent or 0,
                      {"search_kl": round(float(search_score or 0.0), 5), "finetune_kl": round(float(finetuned.value or 0.0), 5),
                       "finetune_val_accuracy": record.val_accuracy, **facts})

    def _short_list(self) -> list[optuna.trial.FrozenTrial]:
        """The short fine-tunes of the ``finetune_top`` best distinct plans (run where missing), best first; the
        best by the search's own score, or with ``rescore_top`` by the score on fresh images (:meth:`_rescored`).
        Only today's short list competes: a plan an earlier run of the study fine-tuned (with a larger
        ``finetune_top``, say) is not chosen unless it is on today's list too.
        With ``finetune_projection`` the projection warm start is fine-tuned too, wherever it ranked, so a plan of
        the sampler's own is chosen only when it is also ahead of the warm start after that fine-tune."""
        context, settings = self.context, self.context.settings
        feasible = ranked_feasible_trials(context.opened_study)
        ranked = distinct_plans(feasible)
        if settings.rescore_top > 0:
            ranked = self._rescored(ranked)
        candidates = ranked[: settings.finetune_top]
        if settings.finetune_projection:
            candidates += projection_unless_listed(feasible, candidates)
        if not candidates:
            return []
        companion, _ = open_study(settings, companion=True)
        complete = companion.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        done = {TrialRecord.of(trial).parent for trial in self._finetuned_under_todays_rule(complete)}
        for number, scored in enumerate(candidates, start=1):
            if scored.number in done:
                continue
            context.log(f"fine-tune {number} of {len(candidates)}: trial {scored.number} (score {scored.value:.4f}), "
                        f"{settings.epochs_per_trial:g} epoch(s), seed(s) {self.short_finetune_seeds(scored.number)}")
            companion.enqueue_trial(dict(scored.params), user_attrs={"strategy": "finetune"})
            run_one_trial(companion, functools.partial(self._short_finetune, scored=scored))
        listed = {scored.number for scored in candidates}
        finetuned = [trial for trial in self._finetuned_under_todays_rule(ranked_feasible_trials(companion))
                     if TrialRecord.of(trial).parent in listed]
        context.log("after the short fine-tune (KL): " + ", ".join(
            f"trial {TrialRecord.of(trial).parent} {float(trial.value or 0.0):.4f}" for trial in finetuned))
        return finetuned

    def short_finetune_seeds(self, parent: int) -> list[int]:
        """The seeds of the short fine-tune of main-study trial ``parent``: ``seed + parent`` (a data order of
        its own), or with ``finetune_seeds`` N the same N seeds for every plan (common random numbers)."""
        settings = self.context.settings
        if settings.finetune_seeds == 0:
            return [settings.seed + parent]
        return [settings.seed + offset for offset in range(settings.finetune_seeds)]

    def _finetuned_under_todays_rule(self, trials: Iterable[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
        """The short fine-tunes among ``trials`` (other fidelities dropped) that today's rule would have run
        (order kept): the same seeds and, distilled or not, the same loss. A rerun with another ``finetune_seeds``
        or ``finetune_distill`` neither reuses nor compares fine-tunes made under the old rule.
        A fine-tune that recorded no seeds (an earlier version's) had the data order of its own, and one that
        recorded no distillation was not distilled."""
        kept = []
        distilled = self.context.settings.finetune_distill
        for trial in trials:
            record = TrialRecord.of(trial)
            if record.fidelity != "finetune":
                continue
            parent = record.parent or 0
            recorded = record.extra.get("finetune_seeds", [self.context.settings.seed + parent])
            if (list(recorded) == self.short_finetune_seeds(parent)
                    and bool(record.extra.get("finetune_distilled", False)) == distilled):
                kept.append(trial)
        return kept

    def _rescored(self, ranked: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
        """The ``rescore_top`` best of ``ranked`` and the projection warm start, ordered by their KL on
        ``rescore_images`` training images the search never used (its own images and BN batches excluded).

        The search's best score is the minimum of many noisy measurements on one fixed set of images, so it flatters
        the plan that happened to suit those images (on ResNet-56 at 100 KB, the lowest of 100 plans, 13 % better than
        the projection there, was 5 % worse on 7,168 other images: ``benchmarks/score_noise.py``). A second, independent measurement of
        the few finalists is not biased by that choice. Each re-score is a trial of the companion study (fidelity
        ``rescore``), so a rerun goes on where it stopped."""
        context, settings = self.context, self.context.settings
        finalists = ranked[: settings.rescore_top]
        finalists += projection_unless_listed(ranked, finalists)
        companion, _ = open_study(settings, companion=True)
        done = finished_at(companion, "rescore")
        missing = [trial for trial in finalists if trial.number not in done]
        if missing:
            context.log(f"re-score: {len(finalists)} plans on {settings.rescore_images} training images the search never saw")
        for scored in missing:
            companion.enqueue_trial(dict(scored.params), user_attrs={"strategy": "rescore"})
            run_one_trial(companion, functools.partial(self._rescore_one, scored=scored))
        done = finished_at(companion, "rescore")
        fresh_kl = {trial.number: fresh_value for trial in finalists if trial.number in done
                    for fresh_value in [done[trial.number].value] if fresh_value is not None}
        kept = sorted((trial for trial in finalists if trial.number in fresh_kl), key=lambda trial: fresh_kl[trial.number])
        context.log("re-score (own -> fresh KL): " + ", ".join(
            f"trial {trial.number} {float(trial.value or 0.0):.4f} -> {fresh_kl[trial.number]:.4f}" for trial in kept))
        return kept

    def _rescore_one(self, trial: optuna.Trial, scored: optuna.trial.FrozenTrial) -> tuple[float, None]:
        context = self.context
        started = time.perf_counter()
        self.proposer.suggest_only(trial)
        plan = TrialRecord.of(scored).plan_for(context.model_spec)
        context.interrupt.check()
        assert self.fresh_scorer is not None  # built when rescore_top > 0, the only case that re-scores
        score = self.fresh_scorer.score_plan(plan)
        TrialRecord.sized(plan, context.sizes.estimate(plan), target_bytes=context.target_bytes,
                          wall_seconds=time.perf_counter() - started, kl_to_baseline=score.kl, agreement=score.agreement,
                          strategy="rescore", worker=worker_name(), parent=scored.number, fidelity="rescore").write(trial)
        return score.kl, None

    def _race(self, finetuned: list[optuna.trial.FrozenTrial]) -> Chosen:
        """Start the final fine-tune of each short-listed plan, stop each after ``race_epochs`` (its training state
        stays in the study folder), and choose the one whose hardened model is closest to the baseline on the
        validation split: KL(baseline || model) over all of it. The fine-tune never trains on those images, and the
        KL needs no labels, so unlike the validation accuracy it neither saturates nor flatters the seen data.
        Each race is a trial of the companion study (fidelity ``race``); the winner's fine-tune then resumes from
        its state, and the others' states are deleted."""
        context, settings = self.context, self.context.settings
        companion, _ = open_study(settings, companion=True)
        raced = finished_at(companion, "race")
        for number, candidate in enumerate(finetuned, start=1):
            parent = TrialRecord.of(candidate).parent
            if parent in raced:
                continue
            context.log(f"race {number} of {len(finetuned)}: trial {parent}, the first {settings.race_epochs} of "
                        f"{settings.final_epochs:g} final epochs")
            scored = context.opened_study.get_trials(deepcopy=False)[parent or 0]
            companion.enqueue_trial(dict(scored.params), user_attrs={"strategy": "race"})
            run_one_trial(companion, functools.partial(self._race_one, candidate=candidate))
        raced = finished_at(companion, "race")
        entrants = [(raced[TrialRecord.of(candidate).parent], candidate) for candidate in finetuned
                    if TrialRecord.of(candidate).parent in raced]
        winner_race, winner = min(entrants, key=lambda pair: float(pair[0].value if pair[0].value is not None else math.inf))
        for _, candidate in entrants:
            if candidate is not winner:
                plan = TrialRecord.of(candidate).plan_for(context.model_spec)
                finetune_state_path(context.baseline, plan, context).unlink(missing_ok=True)
        context.log("race: " + ", ".join(f"trial {TrialRecord.of(race).parent} val KL {race.value:.4f}" for race, _ in entrants)
                    + f"; trial {TrialRecord.of(winner_race).parent} carries on")
        return self._chosen(winner, race_val_kl=round(float(winner_race.value or 0.0), 5),
                            race_val_accuracy=TrialRecord.of(winner_race).val_accuracy, race_epochs=settings.race_epochs)

    def _race_one(self, trial: optuna.Trial, candidate: optuna.trial.FrozenTrial) -> tuple[float, None]:
        context, settings = self.context, self.context.settings
        started = time.perf_counter()
        self.proposer.suggest_only(trial)
        record = TrialRecord.of(candidate)
        plan = record.plan_for(context.model_spec)
        TrialRecord(strategy="race", worker=worker_name(), target_bytes=context.target_bytes, parent=record.parent,
                    fidelity="race").write(trial)
        model = copy.deepcopy(context.baseline)
        finetune_under_plan_(model, plan, context.splits.train, device=context.device, epochs=settings.final_epochs,
                             lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed, progress=False,
                             on_step=context.interrupt.check, distillation=final_distillation(context),
                             precision=settings.precision,
                             checkpoint_path=finetune_state_path(context.baseline, plan, context),
                             stop_after_epochs=settings.race_epochs)
        compressed = measure_within_budget(model, plan, context)
        score = self.val_scorer.score_model(compressed.model)
        TrialRecord.measured(compressed, target_bytes=context.target_bytes, wall_seconds=time.perf_counter() - started,
                             kl_to_baseline=score.kl, agreement=score.agreement).write(trial)
        return score.kl, None

    @functools.cached_property
    def val_scorer(self) -> PlanScorer:
        """KL to the baseline over the whole validation split (the race's measure)."""
        val = self.context.splits.val
        return PlanScorer(self.context.baseline, val, device=self.context.device,
                          settings=ScoreSettings(images=len(val), bn_images=1, seed=self.context.settings.seed,
                                                 temperature=self.context.settings.score_temperature))

    def _short_finetune(self, trial: optuna.Trial, scored: optuna.trial.FrozenTrial) -> tuple[float, None]:
        context, settings = self.context, self.context.settings
        started = time.perf_counter()
        self.proposer.suggest_only(trial)  # the scored trial's parameters, for the dashboard
        plan = TrialRecord.of(scored).plan_for(context.model_spec)
        seeds = self.short_finetune_seeds(scored.number)
        TrialRecord(strategy="finetune", worker=worker_name(), target_bytes=context.target_bytes, parent=scored.number,
                    fidelity="finetune", extra={"finetune_seeds": seeds, "finetune_distilled": settings.finetune_distill}
                    ).write(trial)
        teacher = baseline_distillation(context) if settings.finetune_distill else None
        kls, agreements, val_accuracies = [], [], []
        for seed in seeds:
            model = copy.deepcopy(context.baseline)
            finetune_under_plan_(model, plan, context.splits.train, device=context.device, epochs=settings.epochs_per_trial,
                                 lr=settings.lr, batch_size=settings.batch_size, seed=seed, progress=False,
                                 on_step=context.interrupt.check, precision=settings.precision, distillation=teacher)
            compressed = measure_within_budget(model, plan, context)
            score = self.scorer.score_model(compressed.model)
            kls.append(score.kl)
            agreements.append(score.agreement)
            val_accuracies.append(float(compressed.val_accuracy or 0.0))
        mean_kl = statistics.fmean(kls)
        record = TrialRecord.measured(compressed, target_bytes=context.target_bytes,
                                      wall_seconds=time.perf_counter() - started, kl_to_baseline=mean_kl,
                                      agreement=statistics.fmean(agreements))
        record.val_accuracy = statistics.fmean(val_accuracies)
        if len(seeds) > 1:
            record.extra["finetune_kls"] = [round(kl, 6) for kl in kls]
        record.write(trial)
        return mean_kl, None

    def final(self, chosen: Chosen) -> CompressedModel:
        """The final fine-tune, recorded as a trial of the companion study (fidelity ``final``)."""
        context = self.context
        companion, _ = open_study(context.settings, companion=True)
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


def finished_at(companion: optuna.Study, fidelity: str) -> dict[int | None, optuna.trial.FrozenTrial]:
    """The companion study's finished trials of one fidelity level, by the scored trial they measured."""
    finished = companion.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return {TrialRecord.of(trial).parent: trial for trial in finished if TrialRecord.of(trial).fidelity == fidelity}


def projection_unless_listed(trials: list[optuna.trial.FrozenTrial],
                             listed: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The projection warm start among ``trials``, as a list of one, unless ``listed`` already holds its plan
    (an empty list then, and also where no projection warm start is among ``trials``)."""
    projection = next((trial for trial in trials if TrialRecord.of(trial).strategy == "projection-warmstart"), None)
    if projection is None or any(TrialRecord.of(trial).plan == TrialRecord.of(projection).plan for trial in listed):
        return []
    return [projection]


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
