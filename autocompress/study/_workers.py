"""``--n-jobs``: more worker processes on this machine, each joining the same study.

A worker is a whole run (``entry``, the runner's ``execute_worker``) in a fresh (spawned) process with ``worker=True``: it loads
the data and the baseline itself, opens the study by its storage and name, and runs trials until
the study holds the requested count. The processes share nothing but the storage, exactly like
workers on other machines, so one code path serves both. On a machine with several GPUs each
worker gets its own (``cuda:1``, ``cuda:2``, ...); on a CPU the cores are divided between them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from typing import Any

import torch

from autocompress.settings import SearchSettings

WorkerEntry = Callable[[dict[str, Any], int, str], None]  # (the worker's settings as a dict, its threads, its log path)

JOIN_SECONDS = 60.0  # how long the leading process waits for a worker after the study is done or interrupted


def worker_device(device: str, index: int) -> str:
    """Worker ``index``'s device: its own GPU when there are several, else the shared one."""
    if device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return f"cuda:{index % torch.cuda.device_count()}"
    return device


def threads_per_worker(n_jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // n_jobs)


@contextlib.contextmanager
def local_workers(settings: SearchSettings, entry: WorkerEntry | None, *,
                  log: Callable[[str], None] = print) -> Iterator[list[BaseProcess]]:
    """Start ``settings.n_jobs - 1`` worker processes running ``entry`` (a module-level function, so that a
    spawned process finds it) for the body's duration (the calling process is worker 0); on the way out wait
    for them, and pass a Ctrl-C on to them first."""
    if settings.n_jobs <= 1:
        yield []
        return
    if entry is None:
        raise ValueError("n_jobs > 1 needs the workers' entry point (the runner gives it)")
    threads = threads_per_worker(settings.n_jobs)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    context = multiprocessing.get_context("spawn")  # a clean interpreter: no forked torch or database state
    processes: list[BaseProcess] = []
    for index in range(1, settings.n_jobs):
        worker = dataclasses.replace(settings, n_jobs=1, worker=True, device=worker_device(settings.device, index))
        log_path = settings.study_dir / f"worker-{index}.log"
        process: BaseProcess = context.Process(target=entry, args=(worker.to_dict(), threads, str(log_path)),
                                               name=f"autocompress-worker-{index}")
        process.start()
        processes.append(process)
        log(f"worker {index}: pid {process.pid} on {worker.device} ({threads} thread(s)), log {log_path}")
    try:
        yield processes
    except KeyboardInterrupt:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)  # each marks its running trial failed and stops
        raise
    finally:
        for process in processes:
            process.join(JOIN_SECONDS)
            if process.is_alive():
                process.terminate()
                process.join()
            if process.exitcode not in (0, 130, -signal.SIGINT):
                log(f"{process.name} ended with exit code {process.exitcode}; see its log in {settings.study_dir}")
        torch.set_num_threads(previous_threads)
