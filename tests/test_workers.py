"""Many workers on one study: PostgreSQL and journal-file storages, heartbeats, retries, --n-jobs.

Each two-worker test starts two real ``autocompress search`` processes with the same ``--storage``
and ``--study-name`` and separate output folders (as on two machines), then reads the study back.
The PostgreSQL server is a real one on loopback (``tests/_postgres.py``), skipped only where it
cannot be started.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from autocompress.runner import run_search
from autocompress.study import best_feasible_trial, open_storage
from autocompress.study._interrupt import InterruptGuard
from autocompress.study._storage import HeartbeatJournalStorage
from autocompress.study._study import SurplusTrialError, claim_slot, fail_stale_trials, optimize
from tests._postgres import postgres_server, why_unavailable
from tests._tiny_search import settings_for

pytestmark = pytest.mark.slow
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["journal", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "journal":
        return f"journal:{tmp_path / 'shared' / 'study.log'}"
    return request.getfixturevalue("postgres_url")


def start_worker(storage: str, study: str, output_root: Path, *, tiny_module: Path, checkpoint: Path, data_dir: Path,
                 trials: int, epochs_per_trial: float = 1.0, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """One ``autocompress search`` process on the tiny model, as a user on another machine would start it."""
    args = ["search", "--target-size", "6KB", "--model", "tinynet:tiny", "--checkpoint", str(checkpoint),
            "--data-dir", str(data_dir), "--set", "val_size=200", "--trials", str(trials), "--trial-score", "val_accuracy",
            "--space", "absolute", "--front", "off",
            "--epochs-per-trial", str(epochs_per_trial), "--final-epochs", "0", "--batch-size", "64",
            "--device", "cpu", "--storage", storage, "--study-name", study, "--output-root", str(output_root), *extra]
    env = {**os.environ, "PYTHONPATH": str(tiny_module), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "autocompress.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(process: subprocess.Popen[str], timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def load(storage: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat_seconds=None))


def assert_study_complete(study: optuna.Study, requested: int) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``requested`` finished trials, none left running or queued, any failure explained."""
    trials = study.get_trials()
    finished = [trial for trial in trials if trial.state in FINISHED]
    assert len(finished) == requested, Counter(trial.state.name for trial in trials)
    assert not [trial for trial in trials if trial.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({trial.number for trial in trials}) == len(trials)
    return finished


def test_two_workers_share_one_study(storage_url: str, tiny_module: Path, tiny_checkpoint: Path,
                                     synthetic_data_dir: Path, tmp_path: Path) -> None:
    study_name, requested = f"two-{int(time.time() * 1000)}", 8
    common = dict(tiny_module=tiny_module, checkpoint=tiny_checkpoint, data_dir=synthetic_data_dir, trials=requested)
    workers = [start_worker(storage_url, study_name, tmp_path / name, **common) for name in ("a", "b")]
    outputs = [finish(worker) for worker in workers]
    study = load(storage_url, study_name)
    finished = assert_study_complete(study, requested)
    by_worker = Counter(trial.user_attrs["worker"].rsplit(":", 1)[1] for trial in finished)
    assert set(by_worker) == {str(worker.pid) for worker in workers}, by_worker  # both did work
    assert sum(by_worker.values()) == requested  # none lost, none counted twice
    strategies = Counter(trial.user_attrs["strategy"] for trial in finished)
    assert strategies["uniform-warmstart"] == 1 and strategies["sensitivity-warmstart"] == 1, strategies
    failed = [trial for trial in study.trials if trial.state == TrialState.FAIL]
    assert all("already has" in trial.user_attrs.get("fail_reason", "") for trial in failed), failed  # only surplus
    best = best_feasible_trial(study)
    assert best is not None
    plans = [yaml.safe_load((tmp_path / name / study_name / "best.yaml").read_text()) for name in ("a", "b")]
    assert plans[0]["result"]["trial"] == plans[1]["result"]["trial"] == best.number, outputs
    assert plans[0]["layers"] == plans[1]["layers"]
    assert all(plan["result"]["packed_bytes"] <= 6000 for plan in plans)


def test_a_killed_worker_s_trial_is_failed_and_run_again(storage_url: str, tiny_module: Path, tiny_checkpoint: Path,
                                                         synthetic_data_dir: Path, tmp_path: Path) -> None:
    study_name, requested = f"kill-{int(time.time() * 1000)}", 6
    common = dict(tiny_module=tiny_module, checkpoint=tiny_checkpoint, data_dir=synthetic_data_dir, trials=requested,
                  epochs_per_trial=4.0, extra=("--set", "heartbeat_seconds=1", "--sampler", "random", "--set", "pruner=none"))
    survivor = start_worker(storage_url, study_name, tmp_path / "a", **common)
    victim = start_worker(storage_url, study_name, tmp_path / "b", **common)
    victim_trial = wait_for_running_trial(storage_url, study_name, victim)
    victim.kill()  # SIGKILL: no handler runs, the trial stays RUNNING until its heartbeats go stale
    victim.communicate(timeout=60)
    finish(survivor)
    study = load(storage_url, study_name)
    assert_study_complete(study, requested)
    assert study.trials[victim_trial].state == TrialState.FAIL
    retries = [trial for trial in study.trials if trial.system_attrs.get("failed_trial") == victim_trial]
    assert len(retries) == 1 and retries[0].state in FINISHED
    assert retries[0].params == study.trials[victim_trial].params  # the same proposal, run again
    assert retries[0].user_attrs["worker"].endswith(f":{survivor.pid}")


def wait_for_running_trial(storage: str, study_name: str, worker: subprocess.Popen[str], timeout: float = 300) -> int:
    """The number of a trial ``worker`` is running right now (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker.communicate()[0][-3000:]
        try:
            running = load(storage, study_name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except KeyError:  # the study is not created yet
            running = []
        mine = [trial for trial in running if trial.user_attrs.get("worker", "").endswith(f":{worker.pid}")
                and "repaired" in trial.user_attrs]  # its proposal is complete (every parameter suggested)
        if mine:
            return mine[0].number
        time.sleep(0.2)
    raise AssertionError("the worker never ran a trial")


def test_n_jobs_starts_local_workers_that_share_the_count(tiny_checkpoint: Path, synthetic_data_dir: Path,
                                                          tmp_path: Path) -> None:
    settings = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, study_name="jobs", trials=6, n_jobs=2,
                            epochs_per_trial=1.0)
    messages: list[str] = []
    outcome = run_search(settings, log=messages.append)
    study = load(settings.resolved_storage, "jobs")
    finished = assert_study_complete(study, 6)
    workers = {trial.user_attrs["worker"] for trial in finished}
    assert len(workers) == 2 and any(message.startswith("worker 1: pid") for message in messages)
    assert (tmp_path / "jobs" / "worker-1.log").exists() and outcome.packed_path is not None


def test_a_surplus_trial_stands_down() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.create_trial(value=1.0))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL))  # failures do not count
    claim_slot(study.ask(), requested=2)  # second counting trial: goes ahead (and stays running)
    with pytest.raises(SurplusTrialError, match="already has 2"):
        claim_slot(study.ask(), requested=2)


@pytest.mark.parametrize("kind", ["journal", "sqlite", "postgres"])
def test_heartbeats_fail_and_requeue_a_trial_silent_since_it_started(kind: str, tmp_path: Path,
                                                                     request: pytest.FixtureRequest) -> None:
    """A trial that never sent a heartbeat (its worker died between Optuna creating it and starting the
    heartbeat thread) turns stale like one that stopped sending them; Optuna's RDB storage alone kept it
    running for ever, and every later worker waited for it."""
    urls = {"journal": f"journal:{tmp_path / 'j' / 'study.log'}", "sqlite": f"sqlite:///{tmp_path / 'study.db'}"}
    url = urls[kind] if kind in urls else request.getfixturevalue("postgres_url")
    storage = open_storage(url, heartbeat_seconds=1, max_retries=1)
    assert isinstance(storage, HeartbeatJournalStorage) == (kind == "journal")
    study = optuna.create_study(storage=storage, study_name=f"beats-{tmp_path.name}")
    alive, silent = study.ask(), study.ask()
    alive.suggest_float("x", 0, 1)
    silent.suggest_float("x", 0, 1)
    for _ in range(8):  # 4 s: past the 3-heartbeat grace for the silent one
        storage.record_heartbeat(alive._trial_id)
        time.sleep(0.5)
    young = study.ask()  # silent too, but started within the grace: not stale yet
    fail_stale_trials(study)
    states = {trial.number: trial.state for trial in study.trials}
    assert states[alive.number] == TrialState.RUNNING and states[silent.number] == TrialState.FAIL
    assert states[young.number] == TrialState.RUNNING
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == silent.number
    assert retry.params == {"x": study.trials[silent.number].params["x"]}


class _StoppedBeforeTheObjective(optuna.samplers.RandomSampler):
    """Ctrl-C in the sampler's turn: after Optuna created the trial, before its objective (and heartbeats) began."""

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_ctrl_c_before_the_objective_fails_the_trial_it_leaves_running(kind: str, tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'study.log'}" if kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="stopped", sampler=_StoppedBeforeTheObjective())
    other_worker = optuna.load_study(study_name="stopped", storage=open_storage(url)).ask()  # running elsewhere
    study.enqueue_trial({"x": 0.5})  # a queued trial, popped to running by this process
    calls: list[int] = []
    for _ in range(2):  # the queued trial, then a new one
        with pytest.raises(KeyboardInterrupt):
            optimize(study, lambda trial: float(calls.append(trial.number) or 0.0), trials=5, timeout_seconds=None,
                     interrupt=InterruptGuard(), on_trial_end=lambda *_: None)
    trials = optuna.load_study(study_name="stopped", storage=open_storage(url)).trials
    assert calls == []  # no objective ran: every trial was stopped in the sampler's turn
    ours = [trial for trial in trials if trial.number != other_worker.number]
    assert [trial.state for trial in ours] == [TrialState.FAIL, TrialState.FAIL]
    assert all(trial.user_attrs["fail_reason"] == "interrupted" for trial in ours)
    assert trials[other_worker.number].state == TrialState.RUNNING  # another process's trial is left alone


def test_bad_storage_and_worker_settings_give_one_clear_error(tiny_module: Path, tiny_checkpoint: Path,
                                                              synthetic_data_dir: Path, tmp_path: Path) -> None:
    common = dict(tiny_module=tiny_module, checkpoint=tiny_checkpoint, data_dir=synthetic_data_dir, trials=2)
    cases = {
        "postgresql://nobody@127.0.0.1:1/none": "cannot open the storage postgresql://nobody@127.0.0.1:1/none",
        "journal:": "names no file",
        "nosuchdb://x": "cannot read the storage URL",
    }
    for storage, message in cases.items():
        process = start_worker(storage, "bad", tmp_path, **common)
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 2 and message in output and "Traceback" not in output, output[-2000:]
    process = start_worker(f"journal:{tmp_path / 'ok.log'}", "bad", tmp_path, **common, extra=("--n-jobs", "0"))
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 2 and "error: --n-jobs 0: must be a whole number of at least 1" in output, output[-2000:]


def _open_after(barrier: Any, url: str, results: Any) -> None:
    barrier.wait()
    try:
        open_storage(url, heartbeat_seconds=None)
        results.put("opened")
    except Exception as error:  # reported to the test, which shows it
        results.put(f"{type(error).__name__}: {error}")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_workers_opening_a_new_storage_together_all_open_it(kind: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    """All but one of them lose the race to create the tables; none may fail for it. (Before the
    retry, 6 of 10 rounds of four processes on a fresh SQLite file had a failure, and the first
    round on PostgreSQL did.)"""
    context = multiprocessing.get_context("spawn")
    for round_number in range(3):
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / f'round{round_number}.db'}"
        else:  # a fresh database on the test server each round
            url = _fresh_postgres_database(request.getfixturevalue("postgres_url"), f"race{round_number}")
        barrier, results = context.Barrier(4), context.Queue()
        workers = [context.Process(target=_open_after, args=(barrier, url, results)) for _ in range(4)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        assert outcomes == ["opened"] * 4, (round_number, outcomes)


def _fresh_postgres_database(server_url: str, name: str) -> str:
    """The URL of a new, empty database ``name`` on the server of ``server_url``."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name}")
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"
