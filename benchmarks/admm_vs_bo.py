"""A one-run joint mode (ADMM, or Bayesian Bits with ``--mode bayesbits``) vs BO mode at equal wall-clock,
side by side, on one preset (model, checkpoint, target).

The joint run goes first (its length is set by its epochs); the BO study then gets
the same total wall-clock: its ``--timeout`` is the joint run's wall time minus
the BO's own final fine-tune (estimated from timed training steps). Both land in
their own study under ``--output-root``; each packed file is read back and
evaluated on the test split, as ``autocompress evaluate --packed`` does.

    python benchmarks/admm_vs_bo.py --config studies/resnet20-50KB.yaml --admm-epochs 2 --final-epochs 3
    python benchmarks/admm_vs_bo.py --config studies/resnet56-100KB.yaml --admm-epochs 1 --final-epochs 1
    python benchmarks/admm_vs_bo.py --config studies/resnet20-50KB.yaml --quick     # a few minutes
    python benchmarks/admm_vs_bo.py --mode bayesbits --config studies/resnet20-50KB.yaml --admm-epochs 1 --final-epochs 3
      (with --mode bayesbits, --admm-epochs sets the gate epochs)

A study that already finished under ``--output-root`` is reused, not re-run (its
recorded wall time is used), so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import optuna
import yaml

from autocompress.data import prepare_splits
from autocompress.engine import evaluate, resolve_device, seconds_per_step
from autocompress.models import build_model
from autocompress.pack import read_packed
from autocompress.runner import load_settings, run_search
from autocompress.study import best_feasible_trial

REPO = Path(__file__).resolve().parents[1]


def settings_for(args: argparse.Namespace, mode: str, **overrides) -> object:
    values = {"mode": mode, "final_epochs": args.final_epochs, "output_root": str(args.output_root),
              "study_name": f"{args.config.stem}-{mode}", "seed": args.seed, **overrides}
    if args.quick:
        values.update(val_size=1000, trials=3)
    return load_settings(args.config, values)


def timed_run(settings: object) -> float:
    """Wall seconds of the run (0 when the study was already complete and nothing ran)."""
    started = time.perf_counter()
    run_search(settings)
    return time.perf_counter() - started


def study_wall_seconds(settings: object) -> float:
    """Sum of the trials' wall seconds (a trial records its own), for a reused study."""
    study = optuna.load_study(study_name=settings.resolved_study_name, storage=settings.resolved_storage)
    return sum(float(trial.user_attrs.get("wall_seconds", 0.0)) for trial in study.trials)


def packed_test_accuracy(path: Path, settings: object) -> float:
    packed = read_packed(path)
    splits = prepare_splits(settings.dataset, settings.data_dir, val_size=settings.val_size, split_seed=settings.split_seed)
    return evaluate(packed.model, splits.test, device=resolve_device(settings.device))


def final_seconds(settings: object) -> float:
    """Estimated wall time of the BO's final fine-tune (timed steps x steps), to leave room for it."""
    splits = prepare_splits(settings.dataset, settings.data_dir, val_size=settings.val_size, split_seed=settings.split_seed)
    model = build_model(settings.model, num_classes=splits.num_classes)
    per_step = seconds_per_step(model, splits.train, resolve_device(settings.device), settings.batch_size)
    return per_step * 1.1 * settings.final_epochs * (len(splits.train) // settings.batch_size)  # 1.1: fake-quant steps


def row(label: str, settings: object, wall: float) -> dict:
    study = optuna.load_study(study_name=settings.resolved_study_name, storage=settings.resolved_storage)
    best = yaml.safe_load((settings.study_dir / "best.yaml").read_text())["result"]
    packed = settings.study_dir / "best.acz"
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    best_trial = best_feasible_trial(study)
    return {
        "mode": label,
        "wall_min": wall / 60,
        "trials": f"{len(complete)} (+{len(pruned)} pruned)" if pruned else str(len(complete)),
        "best_strategy": best_trial.user_attrs.get("strategy", "?") if best_trial is not None else "-",
        "bytes": os.path.getsize(packed),
        "val": best["accuracy"]["val"],
        "test": best["accuracy"]["test"],
        "test_from_file": packed_test_accuracy(packed, settings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "studies" / "resnet20-50KB.yaml")
    parser.add_argument("--mode", choices=("admm", "bayesbits"), default="admm", help="the joint mode set against BO")
    parser.add_argument("--admm-epochs", type=float, default=2.0, help="epochs of the joint phase (ADMM, or the gates)")
    parser.add_argument("--final-epochs", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-root", type=Path, default=None, help="study folders (default runs/MODE_vs_bo)")
    parser.add_argument("--quick", action="store_true", help="tiny epochs and 1,000 val images: checks that it runs")
    args = parser.parse_args()
    args.output_root = args.output_root or REPO / "runs" / f"{args.mode}_vs_bo"
    if args.quick:
        args.admm_epochs, args.final_epochs = 0.05, 0.05
        args.output_root = args.output_root.with_name(args.output_root.name + "-quick")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    joint_epochs = {"admm": "admm_epochs", "bayesbits": "gate_epochs"}[args.mode]
    joint = settings_for(args, args.mode, **{joint_epochs: args.admm_epochs})
    joint_wall = timed_run(joint)
    if joint_wall < 60 and not args.quick:  # reused: the trial recorded its own wall time
        joint_wall = study_wall_seconds(joint)
    bo_probe = settings_for(args, "bo")
    budget = max(joint_wall - final_seconds(bo_probe), 60.0 if not args.quick else 5.0)
    bo = settings_for(args, "bo", timeout_seconds=budget, trials=10_000 if not args.quick else 3)
    bo_wall = timed_run(bo)
    if bo_wall < 60 and not args.quick:
        bo_wall = study_wall_seconds(bo)
    rows = [row(args.mode, joint, joint_wall), row(f"bo ({bo.sampler}, search {budget / 60:.1f} min)", bo, bo_wall)]
    print(f"\n{joint.model} at {joint.target_bytes:,} B, {joint.checkpoint}; seed {args.seed}")
    print(f"{'mode':<30} {'wall min':>8} {'trials':>14} {'best from':>22} {'bytes':>8} {'val':>7} {'test':>7} {'test (file)':>11}")
    for item in rows:
        print(f"{item['mode']:<30} {item['wall_min']:>8.1f} {item['trials']:>14} {item['best_strategy']:>22} {item['bytes']:>8,} "
              f"{item['val']:>7.2%} {item['test']:>7.2%} {item['test_from_file']:>11.2%}")
    gates = yaml.safe_load((joint.study_dir / "best.yaml").read_text())["result"].get("measurements", {})
    if "gate_plan_bytes" in gates:
        print(f"the gates' own plan: {gates['gate_plan_bytes']:,} B, {gates['gate_gap_bytes']:+,} B from the target "
              f"({gates['gate_gap_bytes'] / joint.target_bytes:+.1%}); repaired: {gates['repaired']}")


if __name__ == "__main__":
    main()
