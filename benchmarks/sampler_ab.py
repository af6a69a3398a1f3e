"""Which sampler finds the lowest cheap score in the coefficient space, for the same number of trials?

For each sampler and seed, a KL-scored study in the coefficient space (the projection as its warm start)
runs ``--trials`` trials; no fine-tune is spent (``epochs_per_trial`` and ``final_epochs`` 0). Prints, per
sampler, the best score after 10, 20, ... trials (mean and spread over the seeds), how often the best
trial was the sampler's own rather than the warm start, and the seconds per trial.

    python benchmarks/sampler_ab.py --config studies/resnet20-50KB.yaml --samplers cmaes,tpe,gp,random --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from _common import machine_line, verdict

from autocompress.runner import run_search
from autocompress.search import TrialRecord, load_settings

REPO = Path(__file__).resolve().parents[1]


def run_arm(config: Path, root: Path, sampler: str, seed: int, args: argparse.Namespace) -> list[optuna.trial.FrozenTrial]:
    settings = load_settings(config, {
        "space": "coefficients", "trial_score": "kl", "sampler": sampler, "seed": seed, "trials": args.trials,
        "coefficient_groups": args.groups, "sampler_startup_trials": args.startup, "epochs_per_trial": 0.0,
        "final_epochs": 0.0, "finetune_top": 1, "output_root": str(root), "study_name": f"{sampler}-s{seed}",
        "data_dir": str(args.data_dir), "checkpoint": str(args.checkpoint) if args.checkpoint else None,
    })
    run_search(settings, log=lambda _: None)
    study = optuna.load_study(study_name=settings.resolved_study_name, storage=settings.resolved_storage)
    return [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]


def best_after(trials: list[optuna.trial.FrozenTrial], count: int) -> float:
    return min(float(trial.value) for trial in trials[:count] if trial.value is not None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "studies" / "resnet20-50KB.yaml")
    parser.add_argument("--samplers", default="cmaes,tpe,gp,random")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--groups", default="role", help="coefficient groups: role or layer")
    parser.add_argument("--startup", type=int, default=5, help="random start-up trials of TPE and GP")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--checkpoint", type=Path, help="default: the preset's")
    args = parser.parse_args()
    samplers = args.samplers.split(",")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    print(machine_line("sampler_ab.py", f"{args.config.name}, {args.groups} groups, {args.trials} trials"))
    checkpoints = list(range(10, args.trials + 1, 10))
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            for sampler in samplers:  # interleaved: each seed runs every sampler before the next seed
                started = time.perf_counter()
                trials = run_arm(args.config, Path(folder), sampler, seed, args)
                row = results.setdefault(sampler, {})
                for count in checkpoints:
                    row.setdefault(f"best@{count}", []).append(best_after(trials, count))
                best = min(trials, key=lambda trial: float(trial.value or 0.0))
                own = not str(TrialRecord.of(best).strategy).endswith("-warmstart")
                row.setdefault("sampler_won", []).append(float(own))
                row.setdefault("seconds_per_trial", []).append(
                    statistics.median(float(TrialRecord.of(trial).wall_seconds or 0.0) for trial in trials))
                warm = float(trials[0].value or 0.0)
                print(f"seed {seed} {sampler:7s} warm start {warm:.4f}  best {best.value:.4f} (trial {best.number}, "
                      f"{'the sampler' if own else 'the warm start'}), {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\n{'sampler':8s} " + " ".join(f"{'best@' + str(count):>16s}" for count in checkpoints)
          + f" {'sampler won':>12s} {'s/trial':>8s}")
    for sampler, row in results.items():
        cells = " ".join(f"{statistics.mean(row[f'best@{count}']):8.4f} ±{statistics.pstdev(row[f'best@{count}']):6.4f}"
                         for count in checkpoints)
        print(f"{sampler:8s} {cells} {int(sum(row['sampler_won']))}/{len(seeds):>10d} {statistics.median(row['seconds_per_trial']):8.2f}")
    final = f"best@{checkpoints[-1]}"
    ranked = sorted(results, key=lambda name: statistics.mean(results[name][final]))
    winner = ranked[0]
    return verdict(winner != "random",
                   f"{winner} reaches the lowest mean score after {checkpoints[-1]} trials "
                   f"({statistics.mean(results[winner][final]):.4f}); order: {', '.join(ranked)}")


if __name__ == "__main__":
    raise SystemExit(main())
