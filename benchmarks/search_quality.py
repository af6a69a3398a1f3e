"""Does the BO study beat random search and the best uniform allocation at the same budget?

For each seed, three arms with the same number of trials and the same per-trial
fine-tuning: the TPE study (warm-started), a random-search study, and the best
uniform allocation fine-tuned the same way. Prints the best feasible validation
accuracy of each arm per seed, then mean and spread.

    python benchmarks/search_quality.py                # ResNet-20 at 50 KB, 3 seeds x 20 trials (hours on 2 CPU cores)
    python benchmarks/search_quality.py --quick        # 2 seeds x 4 trials of 0.05 epochs (to check it runs)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
from _common import machine_line, verdict

from autocompress.runner import run_search
from autocompress.search import best_feasible_trial, load_settings

REPO = Path(__file__).resolve().parents[1]


def arm_settings(args: argparse.Namespace, root: Path, seed: int, sampler: str, trials: int, warm_start: bool) -> object:
    return load_settings(
        REPO / "studies" / "resnet20-50KB.yaml",
        {
            "checkpoint": str(args.weights),
            "data_dir": str(args.data_dir),
            "target_size": args.target_size,
            "sampler": sampler,
            "pruner": "none",
            "trials": trials,
            "epochs_per_trial": args.epochs_per_trial,
            "final_epochs": 0.0,
            "seed": seed,
            "warm_start": warm_start,
            "output_root": str(root),
            "study_name": f"{sampler}-{'warm' if warm_start else 'cold'}-s{seed}-n{trials}",
        },
    )


def best_value(settings: object) -> float:
    study = optuna.load_study(study_name=settings.resolved_study_name, storage=settings.resolved_storage)
    best = best_feasible_trial(study)
    return float("nan") if best is None else float(best.value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs-per-trial", type=float, default=0.25)
    parser.add_argument("--target-size", default="50KB")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--weights", type=Path, default=REPO.parent / "shared" / "weights" / "akamaster" / "resnet20-12fca82f.th")
    parser.add_argument("--out", type=Path, help="keep the studies here (default: a temporary folder)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.epochs_per_trial = 2, 4, 0.05
    root = args.out or Path(tempfile.mkdtemp(prefix="search_quality_"))
    print(machine_line("benchmarks/search_quality.py", f"{args.seeds} seeds x {args.trials} trials x {args.epochs_per_trial:g} epochs, "
                       f"target {args.target_size}"), flush=True)
    rows: list[tuple[int, float, float, float]] = []
    for seed in range(args.seeds):
        started = time.perf_counter()
        bo = arm_settings(args, root, seed, "tpe", args.trials, warm_start=True)
        run_search(bo, log=lambda _: None)
        random_arm = arm_settings(args, root, seed, "random", args.trials, warm_start=False)
        run_search(random_arm, log=lambda _: None)
        # The uniform arm is the BO study's first (warm-start) trial: the best uniform plan, same fine-tuning.
        study = optuna.load_study(study_name=bo.resolved_study_name, storage=bo.resolved_storage)
        uniform = [t.value for t in study.trials if t.user_attrs.get("strategy") == "uniform-warmstart" and t.value is not None]
        rows.append((seed, best_value(bo), best_value(random_arm), uniform[0] if uniform else float("nan")))
        best = best_feasible_trial(study)
        made_by = "none" if best is None else f"trial {best.number}, {best.user_attrs.get('strategy')}"
        sampler_made = max((t.value for t in study.trials if t.value is not None and t.user_attrs.get("feasible")
                            and not t.user_attrs.get("strategy", "").endswith("-warmstart")), default=float("nan"))
        print(f"seed {seed}: BO {rows[-1][1]:.4f} ({made_by}; best TPE-proposed trial {sampler_made:.4f})  "
              f"random {rows[-1][2]:.4f}  uniform {rows[-1][3]:.4f}  ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"\nbest feasible validation accuracy at {args.target_size}, {args.trials} trials x {args.epochs_per_trial:g} epochs each")
    print(f"{'arm':<10}" + "".join(f"{'seed ' + str(seed):>10}" for seed, *_ in rows) + f"{'mean':>10}{'spread':>10}")
    for index, arm in enumerate(("BO (tpe)", "random", "uniform"), start=1):
        values = [row[index] for row in rows]
        spread = max(values) - min(values)
        print(f"{arm:<10}" + "".join(f"{value:>10.4f}" for value in values) + f"{statistics.mean(values):>10.4f}{spread:>10.4f}")
    wins = sum(row[1] > max(row[2], row[3]) for row in rows)
    print(f"\nstudies kept in {root}")
    return verdict(wins == len(rows), f"the BO study's best feasible val accuracy beats random search and the best uniform "
                                      f"allocation in {wins} of {len(rows)} seeds")


if __name__ == "__main__":
    sys.exit(main())
