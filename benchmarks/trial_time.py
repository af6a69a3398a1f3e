"""Does sizing the entropy-coded file slow the search's trials? Two checkouts' trial times, side by side.

Issue 40 allows the search's trials to get at most 10 % slower with format 2 (a plan's bytes now need its
layers quantized and coded). This runs the same search with each checkout, as a user runs it (the installed
command's module in a subprocess with that checkout first on ``PYTHONPATH``): the preset's recipe with
``--trials N --front off --final-epochs 0``, in a fresh study each time, the checkouts alternating over
``--rounds`` so that drift of the machine falls on both. A trial's time is its Optuna duration
(start to completion of the main study's trial: proposal, projection and sizing, score); the short
fine-tune of the best plan runs in the companion study and is not counted.

    python benchmarks/trial_time.py --checkout old=/work/ab56 --checkout new=. \\
        --preset studies/resnet20-50KB.yaml --trials 30 --rounds 2

Prints each run's median and mean trial seconds, then per checkout the median over all its trials and the
ratio of the last checkout to the first. Time it with nothing else running.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
from _common import machine_line


def trial_seconds(storage: str, study_name: str) -> list[float]:
    study = optuna.load_study(study_name=study_name, storage=storage)
    return [(trial.datetime_complete - trial.datetime_start).total_seconds()
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if trial.datetime_complete is not None and trial.datetime_start is not None]


def run_once(label: str, checkout: Path, args: argparse.Namespace, round_number: int) -> list[float]:
    name = f"{label}-r{round_number}"
    folder = args.output_root / name
    if folder.exists():
        shutil.rmtree(folder)
    command = [sys.executable, "-m", "autocompress.cli", "search", "--config", str(args.preset), "--trials", str(args.trials),
               "--front", "off", "--final-epochs", "0", "--seed", str(args.seed), "--study-name", name,
               "--output-root", str(args.output_root)]
    if args.data_dir:
        command += ["--data-dir", str(args.data_dir)]
    # PYTHONSAFEPATH: `python -m` would otherwise put the working directory (this checkout) ahead of PYTHONPATH
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve()), "PYTHONSAFEPATH": "1"}
    started = time.perf_counter()
    with open(args.output_root / f"{name}.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}); see {args.output_root / f'{name}.log'}")
    seconds = trial_seconds(f"sqlite:///{(folder / 'study.db').resolve()}", name)
    print(f"{name}: {len(seconds)} trials, median {statistics.median(seconds):.2f} s, mean {statistics.fmean(seconds):.2f} s "
          f"(whole run {time.perf_counter() - started:.0f} s)", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", action="append", required=True, metavar="LABEL=PATH",
                        help="a checkout to time (give two; the ratio is the last over the first)")
    parser.add_argument("--preset", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--output-root", type=Path, default=Path("studies/trial_time"))
    args = parser.parse_args()
    checkouts = [(label, Path(path)) for label, _, path in (item.partition("=") for item in args.checkout)]
    args.output_root.mkdir(parents=True, exist_ok=True)
    print(f"{machine_line('trial_time.py')}  preset {args.preset.name}, {args.trials} trials, {args.rounds} rounds", flush=True)
    times: dict[str, list[float]] = {label: [] for label, _ in checkouts}
    for round_number in range(args.rounds):
        order = checkouts if round_number % 2 == 0 else list(reversed(checkouts))
        for label, checkout in order:
            times[label] += run_once(label, checkout, args, round_number)
    for label, seconds in times.items():
        print(f"{label}: median {statistics.median(seconds):.3f} s a trial over {len(seconds)} trials "
              f"(quartiles {statistics.quantiles(seconds, n=4)[0]:.3f}..{statistics.quantiles(seconds, n=4)[2]:.3f})")
    first, last = checkouts[0][0], checkouts[-1][0]
    ratio = statistics.median(times[last]) / statistics.median(times[first])
    print(f"{last} / {first}: {ratio:.3f}x the median trial time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
