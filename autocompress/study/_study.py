"""The Optuna study every strategy records into, and the loop that runs its trials across workers.

A study has one objective, the validation accuracy (maximised), and the target size as a hard
constraint (``packed_bytes - target <= 0``) through Optuna's constraints mechanism; every trial
records its exact packed bytes (:class:`TrialRecord`), so the accuracy/size Pareto front is read off
the trials. (A two-objective study would forbid intermediate reports, and with them every pruner.)
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError
from tqdm.auto import tqdm

from autocompress.errors import AutocompressError, TrainingDivergedError
from autocompress.settings import SearchSettings, TrialObjective
from autocompress.study._interrupt import InterruptGuard
from autocompress.study._records import StudyFacts, TrialRecord, constraint_of
from autocompress.study._samplers import make_pruner, make_sampler
from autocompress.study._storage import fail_trials_left_running, open_storage, redact

METRIC_NAMES = ["val_accuracy"]  # the metric of studies scored by validation accuracy (the first version's objective; kl is the default)
FINETUNE_SUFFIX = ".finetune"  # the companion study of a kl-scored search: its short and final fine-tunes
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
STORAGE_ATTEMPTS = 3
WARM_START_ATTR = "warm_start"  # study user attribute: whether its creator queued the warm starts
POLL_SECONDS = 2.0  # how often a worker with nothing to start looks at the other workers' trials

Objective = Callable[[optuna.Trial], float]
T = TypeVar("T")


def open_study(settings: SearchSettings, objective: TrialObjective, *,
               companion: bool = False) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when the storage already holds one of that name (a resumed
    study, or one that other workers share). Also says whether this call created it: only the
    creator queues the warm starts, so workers starting together do not queue them twice.

    ``companion``: the study of the fine-tuned candidates of a kl-scored search (name + ``.finetune``),
    scored the same way after their fine-tune; its trials are not the sampler's."""
    if settings.storage is None:
        settings.study_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_storage
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            storage = open_storage(url, heartbeat_seconds=settings.heartbeat_seconds, max_retries=settings.max_retries)
            study, created = _create_or_load(storage, settings, objective, companion=companion)
            break
        except SQLAlchemyError as error:  # another process is creating the same new storage's tables right now
            if attempt == STORAGE_ATTEMPTS - 1:
                reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
                raise AutocompressError(f"cannot open the storage {redact(url)}: {reason}; check that the server is up "
                                        "and the URL (user, password, host, port, database) is right") from None
            time.sleep(1.0 + attempt)
    if study.direction.name.lower() != objective.direction:
        raise AutocompressError(
            f"study {study.study_name!r} was created to {study.direction.name.lower()} its trials' score, and these settings "
            f"score trials by {settings.trial_score} ({objective.direction}); give --trial-score the study's own or use "
            "another --study-name")
    if study.metric_names != [objective.metric]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([objective.metric])
    return study, created


def _create_or_load(storage: optuna.storages.BaseStorage, settings: SearchSettings, objective: TrialObjective, *,
                    companion: bool) -> tuple[optuna.Study, bool]:
    if companion:  # every trial of it is queued with the parameters of a scored trial: no model to build
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=settings.seed)
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
        name = settings.resolved_study_name + FINETUNE_SUFFIX
    else:
        sampler = make_sampler(settings.sampler, seed=settings.seed, n_startup_trials=settings.sampler_startup_trials,
                               constraints=constraint_of)
        name, pruner = settings.resolved_study_name, make_pruner(settings.pruner)
    direction = optuna.study.StudyDirection[objective.direction.upper()]
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner), False
    study.set_user_attr(WARM_START_ATTR, settings.warm_start and not companion)  # claimed at once: other workers see it
    return study, True


def record_study_facts(study: optuna.Study, settings: SearchSettings, accuracy: dict[str, float]) -> None:
    """The study's own facts: target, model, settings and the baseline's accuracy (written once)."""
    StudyFacts(target_bytes=settings.target_bytes, model=settings.model, settings=settings.to_dict(),
               baseline_accuracy=accuracy).write(study)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED_STATES)


def completed_trial(study: optuna.Study, strategy: str, target_bytes: int) -> FrozenTrial | None:
    """The study's complete trial of ``strategy`` at ``target_bytes``, if any (a one-trial mode's rerun skips it)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.of(trial)
        if record.strategy == strategy and record.target_bytes == target_bytes:
            return trial
    return None


def best_feasible_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial of best value (by the study's direction) that fits its target (ties: fewer bytes)."""
    ranked = ranked_feasible_trials(study)
    return ranked[0] if ranked else None


def ranked_feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials that fit their target, best value first (ties: fewer bytes, then earlier)."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    candidates = [(trial, TrialRecord.of(trial)) for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    usable = [(trial, record) for trial, record in candidates if record.usable and trial.value is not None]
    usable.sort(key=lambda pair: (sign * float(pair[0].value or 0.0), pair[1].packed_bytes or 0, pair[0].number))
    return [trial for trial, _ in usable]


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


def optimize(study: optuna.Study, objective: Objective, *, trials: int, timeout_seconds: float | None,
             interrupt: InterruptGuard, on_trial_end: Callable[[optuna.Study, FrozenTrial], None]) -> None:
    """Run ``objective`` until the study holds ``trials`` finished trials, or the timeout passes.

    Any number of workers (processes, machines) may run this on one study: the count is the
    study's. A worker starts a trial only while finished + running trials are short of it; when
    the others are running the last ones, it waits for them, so that every worker returns with
    the study complete and reads the same best trial. A worker that died mid-trial stops sending
    heartbeats; its trial turns stale, is marked failed and re-queued (``open_storage``), and a
    waiting worker runs it. ``timeout_seconds`` stops starting trials, as in Optuna. The objective
    should call :func:`claim_slot` first."""
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    if trial_counts(study).finished >= trials:
        return
    bar = tqdm(total=trials, unit="trial", desc="search", dynamic_ncols=True)

    def callback(current: optuna.Study, trial: FrozenTrial) -> None:
        best = best_feasible_trial(current)
        if best is not None:
            bar.set_postfix_str(f"best {current.metric_names[0] if current.metric_names else 'value'}={best.value:.4f} "
                                f"({TrialRecord.of(best).packed_bytes:,} B, trial {best.number})")
        on_trial_end(current, trial)
        interrupt.check()  # a Ctrl-C the interpreter swallowed stops here, the trial saved

    started_here = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            fail_stale_trials(study)
            counts = trial_counts(study)
            bar.update(min(counts.finished, trials) - bar.n)
            if counts.finished >= trials or started_here >= trials:
                return
            if counts.finished + counts.running >= trials and counts.waiting == 0:
                bar.set_description_str(f"search (waiting for {counts.running} trial(s) of other workers)")
                time.sleep(POLL_SECONDS)
                interrupt.check()
                continue
            bar.set_description_str("search")
            started_here += 1
            with warnings.catch_warnings():  # every point of the coefficient space fits: CMA-ES need not read constraints
                warnings.filterwarnings("ignore", message="Constraints have been set, but CmaEsSampler")
                with failed_if_left_running(study):
                    study.optimize(interruptible(objective), n_trials=1, catch=(TrainingDivergedError, SurplusTrialError),
                                   callbacks=[callback], gc_after_trial=True)
    finally:
        bar.close()


def run_one_trial(study: optuna.Study, work: Callable[[optuna.Trial], tuple[float, T]]) -> tuple[int, T] | None:
    """Run ``work`` as one trial of ``study`` (with heartbeats, like any optimized trial); ``work`` returns the
    trial's value and what the caller wants back. Returns (trial number, that), or None when the training
    diverged (the trial is then failed). Ctrl-C marks the trial failed and propagates."""
    result: list[tuple[int, T]] = []

    def objective(trial: optuna.Trial) -> float:
        with marked_if_interrupted(trial):
            value, payload = work(trial)
        result.append((trial.number, payload))
        return value

    with failed_if_left_running(study):
        study.optimize(objective, n_trials=1, catch=(TrainingDivergedError,), gc_after_trial=True)
    return result[0] if result else None


@contextlib.contextmanager
def failed_if_left_running(study: optuna.Study) -> Iterator[None]:
    """Around ``study.optimize``: on Ctrl-C, fail the trials this process leaves running.

    Optuna fails a trial whose objective Ctrl-C stopped, but one stopped after Optuna created it and
    before the objective began stays running; a rerun would wait for it as another worker's."""
    try:
        yield
    except KeyboardInterrupt:
        fail_trials_left_running(study)
        raise


@contextlib.contextmanager
def marked_if_interrupted(trial: optuna.Trial) -> Iterator[None]:
    """On Ctrl-C, record why the trial failed (Optuna marks it failed and lets the interrupt through)."""
    try:
        yield
    except KeyboardInterrupt:
        trial.set_user_attr("fail_reason", "interrupted")
        raise


def interruptible(objective: Callable[[optuna.Trial], T]) -> Callable[[optuna.Trial], T]:
    """``objective``, recording an interrupt as the trial's fail reason."""

    def run(trial: optuna.Trial) -> T:
        with marked_if_interrupted(trial):
            return objective(trial)

    return run


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark the trials of dead workers failed (and re-queue them), as Optuna does before each trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
