"""Where a study lives, and how its workers stay honest.

Three kinds of storage URL are understood:

* ``sqlite:///path/study.db`` — the embedded default, one file; several processes on one machine
  may share it (WAL mode, a 60 s busy timeout).
* any other SQLAlchemy URL, e.g. ``postgresql://user:password@host:5432/db`` — the multi-machine
  case: every ``autocompress search`` pointed at it with the same study name is one more worker.
* ``journal:path/to/study.log`` — Optuna's journal file: an append-only log with file locks,
  several processes on one machine (or a shared file system), no server.

Every storage opened here has heartbeats. A running trial records one every ``heartbeat_seconds``;
a trial silent for ``STALE_AFTER_HEARTBEATS`` intervals belongs to a dead worker. The next worker
that looks marks it failed and enqueues a copy (``RetryHeartbeatStaleTrialCallback``), so a
killed worker never leaves the study waiting for a trial that will not finish. RDB storages keep
heartbeats in their own table (with the database's clock); Optuna's journal storage has none,
so :class:`HeartbeatJournalStorage` keeps them as a trial system attribute. A trial whose worker
died before its first heartbeat (Ctrl-C or a kill between Optuna creating the trial and starting
its heartbeat thread) counts its start as the first, in both kinds: Optuna's RDB storage would
leave it running for ever, and every later worker would wait for it.

Every storage opened here also remembers the trials this process set running
(:class:`RemembersItsTrials`), so that a Ctrl-C can fail the one it leaves behind at once
(:func:`fail_trials_left_running`) instead of a rerun waiting out its grace period.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.orm
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages._rdb import models as rdb_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from autocompress.errors import AutocompressError

JOURNAL_PREFIX = "journal:"
HEARTBEAT_ATTR = "autocompress:heartbeat"  # unix time of a journal trial's last heartbeat
STALE_AFTER_HEARTBEATS = 3
SQLITE_BUSY_SECONDS = 60  # how long a write waits for another process's transaction
CREATE_RACE_ATTEMPTS = 5  # openings of a new storage that another worker is creating (0.5 + 1 + 2 + 4 s of waits)

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def open_storage(url: str, *, heartbeat_seconds: int | None = 30, max_retries: int = 2) -> BaseStorage:
    """The storage behind ``url``, with heartbeats every ``heartbeat_seconds`` (None: off) and a
    stale trial retried up to ``max_retries`` times.

    SQLite files open in WAL mode with ``synchronous=NORMAL``: SQLite's default waits for the disk
    twice per commit, and Optuna commits once per suggested parameter, which cost 139 ms of
    suggestions per ResNet-18 trial; WAL halves it (``benchmarks/sampler_overhead.py``). A killed
    process still loses no committed trial. Readers (the dashboard, ``report``) do not block writers.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _open(url, heartbeat_seconds, max_retries)


def _open(url: str, heartbeat_seconds: int | None, max_retries: int) -> BaseStorage:
    on_stale = RetryHeartbeatStaleTrialCallback(max_retry=max_retries) if heartbeat_seconds else None
    grace = None if heartbeat_seconds is None else STALE_AFTER_HEARTBEATS * heartbeat_seconds
    if is_journal(url):
        return HeartbeatJournalStorage(journal_path(url), heartbeat_seconds=heartbeat_seconds, on_stale=on_stale)
    heartbeat: dict[str, Any] = {"heartbeat_interval": heartbeat_seconds, "grace_period": grace,
                                 "heartbeat_stale_trial_callback": on_stale}
    if url.startswith("sqlite:///"):
        storage = _rdb(url, engine_kwargs={"connect_args": {"timeout": SQLITE_BUSY_SECONDS}}, **heartbeat)
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # connections opened while creating the tables had no pragmas
        return storage
    return _rdb(url, engine_kwargs={"pool_pre_ping": True}, **heartbeat)


def _rdb(url: str, **kwargs: Any) -> RDBStorage:
    """An RDBStorage, with one clear error for a missing driver or an unreachable server.

    Workers started together on a new storage all create its tables at once; all but one lose that
    race (a table that "already exists", a duplicate schema version, a locked file). The losers wait
    and open it again: by then the winner has made the tables."""
    for attempt in range(CREATE_RACE_ATTEMPTS):
        try:
            return _rdb_once(url, **kwargs)
        except sqlalchemy.exc.DBAPIError as error:
            if attempt == CREATE_RACE_ATTEMPTS - 1 or not _lost_creation_race(error):
                raise _storage_error(url, error) from None
            time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def _lost_creation_race(error: sqlalchemy.exc.DBAPIError) -> bool:
    if isinstance(error, sqlalchemy.exc.IntegrityError):
        return True
    reason = str(error.orig or error).lower()
    return "already exists" in reason or "locked" in reason


def _storage_error(url: str, error: sqlalchemy.exc.DBAPIError) -> AutocompressError:
    reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
    return AutocompressError(f"cannot open the storage {redact(url)}: {reason}; check that the server is up "
                             "and the URL (user, password, host, port, database) is right")


def _rdb_once(url: str, **kwargs: Any) -> RDBStorage:
    try:
        return HeartbeatRDBStorage(url, **kwargs)
    except ImportError:  # Optuna's message for a missing driver names none
        hint = "pip install 'autocompress[postgres]'" if url.startswith("postgres") else "install the SQLAlchemy driver for it"
        raise AutocompressError(f"storage {redact(url)} needs a database driver that is not installed: {hint}") from None
    except sqlalchemy.exc.ArgumentError as error:
        raise AutocompressError(f"cannot read the storage URL {redact(url)!r}: {error}; use sqlite:///path.db, "
                                "postgresql://user:password@host:port/db or journal:path.log") from None


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def is_journal(url: str) -> bool:
    return url.startswith(JOURNAL_PREFIX)


def journal_path(url: str) -> Path:
    path = url[len(JOURNAL_PREFIX):]
    if path.startswith("//"):  # journal:///abs/path, the URL-shaped spelling
        path = path[2:]
    if not path:
        raise AutocompressError(f"storage {url!r} names no file; use journal:path/to/study.log")
    return Path(path)


def local_storage_file(url: str) -> Path | None:
    """The file of a SQLite or journal storage (None for a server)."""
    if is_journal(url):
        return journal_path(url)
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    return None


def dashboard_argument(url: str) -> str:
    """What ``optuna-dashboard`` takes for this storage: the URL, or a journal's file path."""
    return str(journal_path(url)) if is_journal(url) else url


def redact(url: str) -> str:
    """The URL with any password replaced, fit for logs and errors."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return url


class RemembersItsTrials(BaseStorage):
    """A storage that remembers which trials this process set running (created, or popped from the
    queue), so that on Ctrl-C the process can fail those it leaves running (:func:`fail_trials_left_running`).

    Optuna marks a trial failed when Ctrl-C stops its objective, but not when the stop lands between
    creating the trial and calling the objective (the sampler's turn, the heartbeat thread's start)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started_here: set[int] = set()

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)  # type: ignore[safe-super]  # a mixin: a concrete storage follows it
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            self.started_here.add(trial_id)
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)  # type: ignore[safe-super]
        if changed and state == TrialState.RUNNING:
            self.started_here.add(trial_id)
        return changed


def fail_trials_left_running(study: optuna.Study) -> list[int]:
    """Mark failed (reason "interrupted") every trial this process set running that is still running;
    returns their numbers. Call it only once this process has stopped running trials of ``study``."""
    storage = study._storage
    own = storage._backend if isinstance(storage, _CachedStorage) else storage
    if not isinstance(own, RemembersItsTrials):
        return []
    left: list[int] = []
    for trial_id in sorted(own.started_here):
        trial = storage.get_trial(trial_id)
        if trial.state == TrialState.RUNNING:
            storage.set_trial_user_attr(trial_id, "fail_reason", "interrupted")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            left.append(trial.number)
    return left


class HeartbeatRDBStorage(RemembersItsTrials, RDBStorage):
    """Optuna's RDB storage, where a running trial that never sent a heartbeat turns stale too.

    Optuna skips such a trial, so one whose worker died between creating it and its first heartbeat
    stayed running for ever. Here its start time counts as its first heartbeat. Start times are
    written with the worker's clock, so this one compares them with the reading worker's clock
    (the machines' clocks need to agree to well within the grace period)."""

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        """Optuna's cached storage creates trials here, not through ``create_new_trial``."""
        trial = super()._create_new_trial(study_id, template_trial)
        if trial.state == TrialState.RUNNING:
            self.started_here.add(trial._trial_id)
        return trial

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
        oldest_live_start = datetime.now() - grace
        with _create_scoped_session(self.scoped_session) as session:
            running = (session.query(rdb_models.TrialModel)
                       .options(sqlalchemy.orm.selectinload(rdb_models.TrialModel.heartbeats))
                       .filter(rdb_models.TrialModel.state == TrialState.RUNNING)
                       .filter(rdb_models.TrialModel.study_id == study_id).all())
            silent = [trial.trial_id for trial in running if not trial.heartbeats and trial.datetime_start is not None
                      and trial.datetime_start < oldest_live_start]
        return stale + [trial_id for trial_id in silent if trial_id not in stale]


class HeartbeatJournalStorage(RemembersItsTrials, JournalStorage, BaseHeartbeat):
    """Optuna's journal file storage with heartbeats (which Optuna gives only to RDB storages).

    A running trial's heartbeat is its ``HEARTBEAT_ATTR`` system attribute, the writer's unix
    time; its start time counts as the first. Journal files are shared by processes of one
    machine (or one file system), so their clocks agree.
    """

    def __init__(self, path: Path, *, heartbeat_seconds: int | None, on_stale: StaleCallback | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(JournalFileBackend(str(path)))
        self._heartbeat_seconds = heartbeat_seconds
        self._on_stale = on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self._heartbeat_seconds is not None
        now = time.time()
        grace = STALE_AFTER_HEARTBEATS * self._heartbeat_seconds
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [trial._trial_id for trial in running if now - last_sign_of_life(trial, now) > grace]

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_seconds

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self._on_stale


def last_sign_of_life(trial: FrozenTrial, now: float) -> float:
    """The later of the trial's start and its last heartbeat (a retried trial inherits its
    predecessor's attributes, so an older heartbeat than the start is not its own)."""
    started = trial.datetime_start.timestamp() if trial.datetime_start is not None else now
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    return max(started, float(beat)) if isinstance(beat, (int, float)) else started
