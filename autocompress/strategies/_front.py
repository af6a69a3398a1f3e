"""The accuracy/size front (``--front``, by default half to four times the target): the budget itself
sampled, since a trial takes seconds.

After the search at the target (and before the final fine-tune, which fills what is left of ``--time``),
a two-objective study ``<name>.front`` samples the coefficients and
the budget (log scale over the range); each trial projects onto its budget and takes the cheap score,
so its objectives are (KL to the baseline, exact packed bytes). It starts from the projection (all
coefficients 1) at a few budgets spread over the range. Then ``front_finetunes`` points of its Pareto
front, spread over the range, get the short fine-tune; their validation and test accuracy (the test
split reports here, it chooses nothing) are recorded as trials of the companion study (fidelity
``front``). ``report`` draws both (``front.png``).
"""

from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np
import optuna

from autocompress.allocation import PlanScorer
from autocompress.pipeline import finetune_under_plan_
from autocompress.search import SearchContext, measure_within_budget, worker_name
from autocompress.strategies._checks import objective_of
from autocompress.strategies._proposals import CoefficientProposer
from autocompress.study import TrialRecord, failed_if_left_running, interruptible, open_storage, open_study, run_one_trial
from autocompress.units import format_size

FRONT_SUFFIX = ".front"
BUDGET_PARAM = "budget_bytes"
FRONT_WARM_STARTS = 6  # the projection at this many budgets spread over the range


def run_front(context: SearchContext, proposer: CoefficientProposer, scorer: PlanScorer) -> optuna.Study:
    """Run (or resume) the front study and fine-tune points of its front; returns the front study."""
    settings = context.settings
    assert settings.resolved_front is not None
    low, high = settings.resolved_front
    study = open_front_study(context)
    if not study.trials:
        for budget in np.geomspace(low, high, FRONT_WARM_STARTS):
            study.enqueue_trial({**proposer.space.ones(), BUDGET_PARAM: float(budget)}, user_attrs={"strategy": "projection-warmstart"})
    remaining = settings.front_trials - len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
    if remaining > 0:
        context.log(f"front: {remaining} trial(s) sampling coefficients and the budget over {format_size(low)}..{format_size(high)}")

        def objective(trial: optuna.Trial) -> tuple[float, float]:
            started = time.perf_counter()
            budget = int(trial.suggest_float(BUDGET_PARAM, low, high, log=True))
            plan = proposer.space.plan_for(proposer.space.suggest(trial), budget, model=context.model_spec)
            if plan is None:
                raise optuna.TrialPruned(f"no plan of the space fits {budget:,} bytes")
            score = scorer.score_plan(plan)
            record = TrialRecord.sized(plan, context.sizes.estimate(plan), target_bytes=budget, fidelity="score",
                                       wall_seconds=time.perf_counter() - started, kl_to_baseline=score.kl,
                                       agreement=score.agreement, strategy=trial.user_attrs.get("strategy", "front"))
            for key, value in record.attributes().items():
                trial.set_user_attr(key, value)
            context.interrupt.check()
            return score.kl, float(record.packed_bytes or 0)

        waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        timeout = context.clock.front_remaining() if context.clock is not None else None
        with failed_if_left_running(study):  # the queued projections first, whatever the time: they take seconds
            study.optimize(interruptible(objective), n_trials=min(waiting, remaining), gc_after_trial=True)
            if remaining > waiting:
                study.optimize(interruptible(objective), n_trials=remaining - waiting, timeout=timeout, gc_after_trial=True)
    finetune_front_points(context, study, scorer)
    return study


def open_front_study(context: SearchContext) -> optuna.Study:
    settings = context.settings
    storage = open_storage(settings.resolved_storage, heartbeat_seconds=settings.heartbeat_seconds, max_retries=settings.max_retries)
    sampler = optuna.samplers.TPESampler(seed=settings.seed, multivariate=True, n_startup_trials=FRONT_WARM_STARTS + 4)
    study = optuna.create_study(storage=storage, study_name=settings.resolved_study_name + FRONT_SUFFIX,
                                directions=["minimize", "minimize"], sampler=sampler, load_if_exists=True)
    if study.metric_names != ["kl_to_baseline", "packed_bytes"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["kl_to_baseline", "packed_bytes"])
    return study


def spread_over_sizes(trials: list[optuna.trial.FrozenTrial], count: int) -> list[optuna.trial.FrozenTrial]:
    """``count`` of the front's trials, spread evenly over the logarithm of their bytes."""
    if count <= 0 or not trials:
        return []
    ordered = sorted(trials, key=lambda trial: trial.values[1])
    if len(ordered) <= count:
        return ordered
    sizes = np.log([trial.values[1] for trial in ordered])
    aims = np.linspace(sizes[0], sizes[-1], count)
    chosen: list[optuna.trial.FrozenTrial] = []
    for aim in aims:
        nearest = min((trial for trial in ordered if trial not in chosen), key=lambda trial: abs(math.log(trial.values[1]) - aim))
        chosen.append(nearest)
    return sorted(chosen, key=lambda trial: trial.values[1])


def finetune_front_points(context: SearchContext, front: optuna.Study, scorer: PlanScorer) -> None:
    """The short fine-tune of ``front_finetunes`` points of the front, each a trial of the companion study."""
    settings = context.settings
    companion, _ = open_study(settings, objective_of(settings), companion=True)
    done = {TrialRecord.of(trial).extra.get("front_trial") for trial in companion.get_trials(deepcopy=False)
            if TrialRecord.of(trial).fidelity == "front" and trial.state == optuna.trial.TrialState.COMPLETE}
    for point in spread_over_sizes(front.best_trials, settings.front_finetunes):
        if point.number in done:
            continue
        record = TrialRecord.of(point)
        context.log(f"front: fine-tuning the point at {record.packed_bytes:,} B (KL {point.values[0]:.4f})")

        def work(trial: optuna.Trial, point: optuna.trial.FrozenTrial = point) -> tuple[float, None]:
            started = time.perf_counter()
            scored = TrialRecord.of(point)
            budget = int(scored.target_bytes or 0)
            plan = scored.plan_for(context.model_spec)
            aimed = context.for_target(budget)
            TrialRecord(strategy="front", worker=worker_name(), target_bytes=budget, fidelity="front",
                        extra={"front_trial": point.number}).write(trial)
            model = copy.deepcopy(context.baseline)
            finetune_under_plan_(model, plan, context.splits.train, device=context.device, epochs=settings.epochs_per_trial,
                                 lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed, progress=False,
                                 on_step=context.interrupt.check, precision=settings.precision)
            compressed = measure_within_budget(model, plan, aimed, measure_test=True)
            score = scorer.score_model(compressed.model)
            TrialRecord.measured(compressed, target_bytes=budget, wall_seconds=time.perf_counter() - started,
                                 kl_to_baseline=score.kl, agreement=score.agreement).write(trial)
            return score.kl, None

        run_one_trial(companion, work)
