"""Two workers on one study against one worker: trials per minute, on each storage.

Each arm is real ``autocompress search`` processes sharing one study through ``--storage``:
one worker with all the cores, or two workers with half the cores each (``OMP_NUM_THREADS``),
each asking for the same study-wide ``--trials``. The trials are cheap on purpose (a small CNN on
a synthetic CIFAR-shaped set, a fraction of an epoch), so the storage and the coordination
between workers weigh as much as they ever will. Arms run one after the other in the order
1-2-2-1 per storage, so drift on a noisy machine hits both alike.

Per arm it prints the wall time from launch to the last process's exit, the finished trials,
and two rates: trials per minute of wall time (process start-up included) and trials per minute
between the first trial's start and the last trial's end (the search itself). It checks that
every arm recorded exactly the requested trials, none twice.

    python benchmarks/workers.py                       # sqlite, journal, postgres; 24 trials per arm
    python benchmarks/workers.py --quick               # 8 trials per arm
    python benchmarks/workers.py --storages journal --trials 40

PostgreSQL is a throwaway server on loopback (Debian's package, as the tests start it); it is
skipped with the reason when it cannot be started.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from _common import machine_line, verdict

from autocompress.data import prepare_splits, write_synthetic_cifar
from autocompress.engine import train
from autocompress.models import build_model, save_checkpoint
from autocompress.study import open_storage
from tests._postgres import postgres_server, why_unavailable
from tests._tiny_search import TINY_MODEL

CORES = os.cpu_count() or 1
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class ArmResult:
    storage: str
    workers: int
    wall_seconds: float
    finished: int
    search_seconds: float

    @property
    def per_minute_wall(self) -> float:
        return 60 * self.finished / self.wall_seconds

    @property
    def per_minute_search(self) -> float:
        return 60 * self.finished / self.search_seconds


def prepare(root: Path) -> tuple[Path, Path, Path]:
    """Synthetic data, the tiny model's module and a baseline checkpoint trained for 2 epochs."""
    data_dir = write_synthetic_cifar(root / "data")
    module_dir = root / "usermodel"
    module_dir.mkdir()
    (module_dir / "tinynet.py").write_text(TINY_MODEL)
    sys.path.insert(0, str(module_dir))
    splits = prepare_splits("cifar10", data_dir, val_size=200, split_seed=0, download=False)
    model = build_model("tinynet:tiny", num_classes=10)
    train(model, splits.train, device=torch.device("cpu"), epochs=2, lr=0.05, batch_size=64, seed=0, progress=False)
    checkpoint = root / "tiny.pt"
    save_checkpoint(checkpoint, model, model_spec="tinynet:tiny", dataset="cifar10", seed=0)
    return data_dir, module_dir, checkpoint


def run_arm(storage: str, label: str, workers: int, args: argparse.Namespace, root: Path,
            data_dir: Path, module_dir: Path, checkpoint: Path) -> ArmResult:
    study_name = f"{label}-{workers}w-{time.time_ns()}"
    threads = max(1, CORES // workers)
    env = {**os.environ, "PYTHONPATH": str(module_dir), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "autocompress.cli", "search", "--target-size", "6KB", "--model", "tinynet:tiny",
               "--checkpoint", str(checkpoint), "--data-dir", str(data_dir), "--set", "val_size=200",
               "--trials", str(args.trials), "--epochs-per-trial", str(args.epochs_per_trial), "--final-epochs", "0",
               "--batch-size", "64", "--device", "cpu", "--trial-score", "val_accuracy", "--space", "absolute",
               "--sampler", "tpe", "--front", "off", "--set", "pruner=none", "--set", "warm_start=false",
               "--storage", storage, "--study-name", study_name]
    started = time.perf_counter()
    processes = [subprocess.Popen([*command, "--output-root", str(root / "out" / f"{study_name}-{index}")], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for index in range(workers)]
    for process in processes:
        _, stderr = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise RuntimeError(f"a worker failed ({process.returncode}): {stderr[-2000:]}")
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage, heartbeat_seconds=None))
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    if len(finished) != args.trials or len({trial.number for trial in finished}) != args.trials:
        raise RuntimeError(f"{label}, {workers} worker(s): {len(finished)} finished trials recorded, asked for {args.trials}")
    span = max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)
    return ArmResult(label, workers, wall, len(finished), span.total_seconds())


def storages(names: list[str], root: Path, stack) -> dict[str, str]:
    urls: dict[str, str] = {}
    for name in names:
        if name == "sqlite":
            urls[name] = f"sqlite:///{root / 'sqlite' / 'study.db'}"
            (root / "sqlite").mkdir()
        elif name == "journal":
            urls[name] = f"journal:{root / 'journal' / 'study.log'}"
        elif name == "postgres":
            reason = why_unavailable()
            if reason is None:
                urls[name] = stack.enter_context(postgres_server())
            else:
                print(f"# postgres skipped: {reason}")
        else:
            raise SystemExit(f"unknown storage {name!r}; use sqlite, journal, postgres")
    return urls


def main() -> int:
    import contextlib

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storages", default="sqlite,journal,postgres")
    parser.add_argument("--trials", type=int, default=24, help="study-wide trials of every arm")
    parser.add_argument("--epochs-per-trial", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="8 trials per arm")
    args = parser.parse_args()
    if args.quick:
        args.trials = 8
    print(machine_line("benchmarks/workers.py", f"{CORES} cores, {args.trials} trials per arm, "
                       f"{args.epochs_per_trial:g} epoch(s) per trial, optuna {optuna.__version__}"))
    results: list[ArmResult] = []
    with tempfile.TemporaryDirectory(prefix="autocompress-workers-") as folder, contextlib.ExitStack() as stack:
        root = Path(folder)
        data_dir, module_dir, checkpoint = prepare(root)
        for label, url in storages(args.storages.split(","), root, stack).items():
            for workers in (1, 2, 2, 1):
                result = run_arm(url, label, workers, args, root, data_dir, module_dir, checkpoint)
                results.append(result)
                print(f"{label:9s} {workers} worker(s): {result.finished} trials, wall {result.wall_seconds:6.1f} s "
                      f"({result.per_minute_wall:5.1f}/min), search {result.search_seconds:6.1f} s "
                      f"({result.per_minute_search:5.1f}/min)", flush=True)
    print("\nstorage    1 worker /min   2 workers /min   ratio (wall)   ratio (search span)")
    ratios = []
    for label in dict.fromkeys(result.storage for result in results):
        one = [r for r in results if r.storage == label and r.workers == 1]
        two = [r for r in results if r.storage == label and r.workers == 2]
        mean = lambda rs, key: sum(getattr(r, key) for r in rs) / len(rs)  # noqa: E731
        wall_ratio = mean(two, "per_minute_wall") / mean(one, "per_minute_wall")
        search_ratio = mean(two, "per_minute_search") / mean(one, "per_minute_search")
        ratios.append(search_ratio)
        print(f"{label:9s} {mean(one, 'per_minute_search'):8.1f}        {mean(two, 'per_minute_search'):8.1f}"
              f"          {wall_ratio:5.2f}x          {search_ratio:5.2f}x")
    return verdict(all(ratio > 1.0 for ratio in ratios),
                   "every arm recorded exactly the trials asked for; two workers vs one (search span): "
                   + ", ".join(f"{ratio:.2f}x" for ratio in ratios))


if __name__ == "__main__":
    sys.exit(main())
