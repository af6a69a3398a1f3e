"""The BO mode (CLIP-Q style): an Optuna study proposes plans on the budget, the best one is fine-tuned.

A trial proposes a plan in the search space (``--space``, ``_proposals``), scores it (``--trial-score``,
``_scoring``: a short fine-tune and validation accuracy, or the cheap KL score with fidelity levels
after it), and records it. The study starts from warm starts. After the trials, the chosen plan gets
the final fine-tune and becomes ``best.acz``. Random search is the same study with Optuna's random
sampler and no warm starts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import optuna

from autocompress.plan import Plan
from autocompress.search import (
    SearchContext,
    SearchOutcome,
    Strategy,
    finished_final,
    outcome_of,
    restate_choice,
    write_best,
    write_best_so_far,
)
from autocompress.settings import SearchSettings
from autocompress.strategies._checks import objective_of
from autocompress.strategies._front import run_front
from autocompress.strategies._proposals import CoefficientProposer, Proposer, proposer_for
from autocompress.strategies._scoring import SCORINGS, CheapKL, Chosen, TrialScoring
from autocompress.study import (
    WARM_START_ATTR,
    StudyFacts,
    TrialRecord,
    best_feasible_trial,
    finished_trials,
    local_workers,
    optimize,
    trial_counts,
)
from autocompress.units import format_size


class BoStrategy(Strategy):
    name = "bo"
    scopes = ("bo",)
    runs_side_by_side = True
    summary = "per-layer sparsity and bits by Bayesian optimisation (an Optuna study), in-parallel pruning-quantization (CLIP-Q)"
    hyperparameters: ClassVar[tuple[str, ...]] = ("target size", "trials", "epochs per trial", "final epochs", "learning rate",
                                                  "sampler", "pruner", "max sparsity", "min bits", "max bits")

    def describe(self, settings: SearchSettings) -> str:
        return (f"running to {settings.trials} trials; target {format_size(settings.target_bytes)}; {settings.space} space, "
                f"sampler {settings.sampler}; trials scored by {settings.trial_score}: {objective_of(settings).summary}; "
                f"{settings.epochs_per_trial:g} epoch(s) per fine-tuned trial")

    def budget_settings(self, settings: SearchSettings, *, epochs: float, trials: int) -> SearchSettings:
        """Half of the budget for the fine-tunes of ``trials`` candidates, half for the final fine-tune.

        Which setting counts the candidates is the trial scoring's: scored by validation accuracy every
        trial trains; scored by KL the study keeps its own trial count and fine-tunes ``trials`` of the best,
        so both spend the same epochs."""
        split = dataclasses.replace(settings, epochs_per_trial=epochs / 2 / trials, final_epochs=epochs / 2, warm_start=True)
        counted: dict[str, Any] = {SCORINGS[settings.trial_score].candidates_setting: trials}
        return dataclasses.replace(split, **counted)

    def final_finetune(self, context: SearchContext, scoring: TrialScoring, chosen: Chosen) -> Plan:
        """Fine-tune the chosen plan, write ``best.acz``/``best.yaml``, then record it in the study."""
        settings = context.settings
        teacher = f", distilled from the baseline at T={settings.distill_temperature:g}" if settings.distill else ""
        length = "sized to the time left" if context.clock is not None else f"{settings.final_epochs:g} epochs"
        context.log(f"final fine-tune of trial {chosen.trial_number} ({length}{teacher})")
        compressed = scoring.final(chosen)
        final_plan = write_best(context.settings.study_dir, compressed, context, trial_number=chosen.trial_number,
                                extra=chosen.facts)
        StudyFacts(final={key: final_plan.result[key] for key in ("packed_bytes", "accuracy", "trial")}).write(context.opened_study)
        return final_plan

    def run(self, context: SearchContext) -> SearchOutcome:
        settings, study, folder = context.settings, context.opened_study, context.settings.study_dir
        proposer = proposer_for(context)
        scoring = SCORINGS[settings.trial_score](context, proposer)
        if should_warm_start(study, context.study_created, settings):
            queued = enqueue_warm_starts(study, proposer)
            context.log(f"warm start: queued {', '.join(queued) or 'nothing (no uniform plan fits)'}")
        def on_trial_end(done: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
            write_best_so_far(done, folder, settings.model, settings.target_bytes)

        with local_workers(settings, context.worker_entry, log=context.log):
            if context.clock is not None:  # the queued warm starts run whatever the time, so there is a plan to return
                counts = trial_counts(study)
                optimize(study, scoring.objective, trials=min(settings.trials, counts.finished + counts.waiting),
                         timeout_seconds=None, interrupt=context.interrupt, on_trial_end=on_trial_end)
            optimize(study, scoring.objective, trials=settings.trials, timeout_seconds=trial_timeout(context),
                     interrupt=context.interrupt, on_trial_end=on_trial_end)
        write_best_so_far(study, folder, settings.model, settings.target_bytes)  # other workers' trials may have ended after ours
        if settings.worker:
            return report_worker_done(context)
        chosen = scoring.choose()
        if chosen is None:
            context.log("no feasible trial finished yet; rerun the same command to continue the study")
            return SearchOutcome.empty(context)
        if settings.resolved_front is not None and isinstance(proposer, CoefficientProposer) and isinstance(scoring, CheapKL):
            run_front(context, proposer, scoring.scorer)  # before the final fine-tune, which fills the time left
        final_plan = finished_final(context, chosen.trial_number, folder)
        if final_plan is not None:
            context.log(f"the final fine-tune of trial {chosen.trial_number} is done already (test "
                        f"{final_plan.result['accuracy']['test']:.2%}, {final_plan.result['packed_bytes']:,} B); "
                        f"its files are in {folder}")
            final_plan = restate_choice(folder, final_plan, context, chosen.facts)
        else:
            final_plan = self.final_finetune(context, scoring, chosen)
        return outcome_of(context, final_plan, folder)


class RandomStrategy(BoStrategy):
    """The BO study with Optuna's random sampler and no warm starts: the baseline a search must beat."""

    name = "random"
    summary = "per-layer sparsity and bits by random search (the BO study's trials, no model, no warm starts)"
    runs_side_by_side = False  # one process: the baseline is timed as a user runs it
    hyperparameters = ("target size", "trials", "epochs per trial", "final epochs", "learning rate", "max sparsity",
                       "min bits", "max bits")

    def prepare(self, settings: SearchSettings) -> SearchSettings:
        return dataclasses.replace(settings, sampler="random", warm_start=False)


def trial_timeout(context: SearchContext) -> float | None:
    """How long trials may still start: ``timeout``, and with ``--time`` the search's share of it."""
    limits = [limit for limit in (context.settings.timeout_seconds,
                                  context.clock.search_remaining() if context.clock is not None else None) if limit is not None]
    return min(limits) if limits else None


def should_warm_start(study: optuna.Study, created: bool, settings: SearchSettings) -> bool:
    """Queue warm starts in a study this process created, or in an empty one whose creator left no
    word on them (a study made by an older version)."""
    if not settings.warm_start:
        return False
    return created or (not study.trials and WARM_START_ATTR not in study.user_attrs)


def enqueue_warm_starts(study: optuna.Study, proposer: Proposer) -> list[str]:
    """Queue the space's warm starts as the first trials; returns their names."""
    queued = []
    for strategy, params in proposer.warm_starts():
        study.enqueue_trial(params, user_attrs={"strategy": strategy}, skip_if_exists=True)
        queued.append(strategy)
    return queued


def report_worker_done(context: SearchContext) -> SearchOutcome:
    """A --worker leaves the final fine-tune and the files to the process run without --worker."""
    study = context.opened_study
    best = best_feasible_trial(study)
    found = "no feasible trial" if best is None else (
        f"best feasible trial {best.number}: {best.value:.4f}, {TrialRecord.of(best).packed_bytes:,} B")
    context.log(f"worker done: {len(finished_trials(study))} finished trial(s) in the study, {found}. The final fine-tune and "
                "best.yaml/best.acz come from the same command without --worker (or `autocompress report` for the tables)")
    return SearchOutcome.empty(context)
