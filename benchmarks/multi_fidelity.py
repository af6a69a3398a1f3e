"""Does pruning weak trials early buy more trials per hour at the same final accuracy?

Two studies of the same search (``studies/resnet20-50KB.yaml``: ResNet-20, real
CIFAR-10, 50 KB target, TPE, 0.25 epochs per trial, warm-started) that differ only
in the pruner: ``median`` (4 intermediate reports per trial on 1,000 validation
images) against ``none``. The two arms run interleaved in one process, one trial
at a time, the arm that has used less wall time going next, so load from other
processes hits both alike; each arm gets the same wall-clock budget.

It prints, per arm: finished trials (complete + pruned) and trials per hour, the
best feasible validation accuracy reached, and how long the arm took to first
reach the best accuracy the other arm ever reached (time to equal accuracy). No
final fine-tune is run: only the search itself is compared.

    python benchmarks/multi_fidelity.py                  # 20 minutes per arm
    python benchmarks/multi_fidelity.py --quick          # 3 minutes per arm, 0.05-epoch trials
    python benchmarks/multi_fidelity.py --minutes 40 --pruner hyperband

The studies are written under a temporary folder that is deleted at the end
(``--keep DIR`` keeps them there, e.g. for ``autocompress report``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from _common import machine_line

from autocompress.data import prepare_splits
from autocompress.engine import resolve_device
from autocompress.errors import TrainingDivergedError
from autocompress.models import build_model, load_checkpoint
from autocompress.search import SearchContext, best_feasible_trial, load_settings, open_study, space_for
from autocompress.search._study import FINISHED_STATES
from autocompress.strategies._bo import enqueue_warm_starts, run_trial, use_relative_space

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Arm:
    name: str
    study: optuna.Study
    context: SearchContext
    wall_seconds: float = 0.0
    best_curve: list[tuple[float, float]] = field(default_factory=list)  # (arm wall seconds, best feasible val)

    @property
    def finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED_STATES))

    @property
    def pruned(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))

    @property
    def best(self) -> float:
        best = best_feasible_trial(self.study)
        return float("nan") if best is None else float(best.value)

    def run_one_trial(self) -> None:
        started = time.perf_counter()
        self.study.optimize(lambda trial: run_trial(trial, self.context), n_trials=1, catch=(TrainingDivergedError,))
        self.wall_seconds += time.perf_counter() - started
        self.best_curve.append((self.wall_seconds, self.best))

    def seconds_to_reach(self, accuracy: float) -> float | None:
        return next((seconds for seconds, best in self.best_curve if best >= accuracy), None)


    @property
    def best_guided(self) -> float:
        """Best feasible value among the sampler's own trials (warm starts left out)."""
        values = [
            float(trial.value)
            for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if trial.user_attrs.get("feasible") and "warmstart" not in trial.user_attrs.get("strategy", "")
        ]
        return max(values, default=float("nan"))


def make_arm(label: str, overrides: dict[str, object], args: argparse.Namespace, root: Path, baseline: torch.nn.Module, splits, device) -> Arm:  # noqa: E501
    """One study of the ResNet-20 50 KB preset with ``overrides``, warm starts queued (as `autocompress search` does)."""
    settings = load_settings(
        REPO_ROOT / "studies" / "resnet20-50KB.yaml",
        {
            "checkpoint": str(args.weights),
            "data_dir": str(args.data_dir),
            "epochs_per_trial": args.epochs_per_trial,
            "seed": args.seed,
            "output_root": str(root),
            "study_name": label,
            "device": "cpu",
            "trials": 1_000_000,  # the arms are bounded by wall time, not by a trial count
            **overrides,
        },
    )
    study, _ = open_study(settings)
    context = SearchContext(settings, baseline, splits, space_for(baseline, settings), device, budgets=[])
    use_relative_space(context)
    enqueue_warm_starts(study, context)
    return Arm(label, study, context)


def run_interleaved(arms: list[Arm], budget_seconds: float) -> None:
    """Run trials, always on the arm that has used the least wall time, until each has used the budget."""
    while any(arm.wall_seconds < budget_seconds for arm in arms):
        arm = min((a for a in arms if a.wall_seconds < budget_seconds), key=lambda a: a.wall_seconds)
        arm.run_one_trial()
        print(
            f"  {arm.name:<16} trial {arm.finished:>3} ({arm.pruned} pruned) at {arm.wall_seconds / 60:5.1f} min: "
            f"best feasible val {arm.best:.4f}",
            flush=True,
        )


def print_arms(arms: list[Arm]) -> None:
    """Per arm: trials, pruned, minutes, trials/hour, best val, best sampler-made val, minutes to reach the other's best."""
    header = (
        f"{'arm':<16} {'trials':>6} {'pruned':>6} {'minutes':>8} {'trials/hour':>12} {'best val':>9} "
        f"{'best sampled':>13} {'min to reach other best':>24}"
    )
    print("\n" + header)
    print("-" * len(header))
    for arm in arms:
        other_best = max(other.best for other in arms if other is not arm)
        reach = arm.seconds_to_reach(other_best)
        print(
            f"{arm.name:<16} {arm.finished:>6} {arm.pruned:>6} {arm.wall_seconds / 60:>8.1f} "
            f"{3600 * arm.finished / arm.wall_seconds:>12.1f} {arm.best:>9.4f} {arm.best_guided:>13.4f} "
            f"{'never' if reach is None else f'{reach / 60:.1f}':>24}"
        )


def load_baseline_and_data(args: argparse.Namespace):
    baseline = build_model("resnet20")
    load_checkpoint(baseline, args.weights)
    return baseline.eval(), prepare_splits("cifar10", args.data_dir, val_size=5000, split_seed=0)


def arm_arguments(description: str, default_minutes: float) -> argparse.ArgumentParser:
    """The options every interleaved-arms benchmark takes; ``finish_arm_arguments`` fills the defaults."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="3 minutes per arm, 0.05-epoch trials")
    parser.add_argument("--minutes", type=float, default=None, help=f"wall-clock budget per arm (default {default_minutes:g}; quick 3)")
    parser.add_argument("--epochs-per-trial", type=float, default=None, help="default 0.25 (the preset's); quick 0.05")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--weights", type=Path, default=REPO_ROOT.parent / "shared" / "weights" / "akamaster" / "resnet20-12fca82f.th")
    parser.add_argument("--keep", type=Path, default=None, help="write the two studies here and keep them")
    parser.set_defaults(default_minutes=default_minutes)
    return parser


def finish_arm_arguments(args: argparse.Namespace) -> float:
    """Fill the quick/full defaults in ``args``; returns the wall-clock budget per arm in seconds."""
    args.epochs_per_trial = args.epochs_per_trial or (0.05 if args.quick else 0.25)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return 60 * (args.minutes or (3 if args.quick else args.default_minutes))


def compare_arms(script: str, what: str, arms: dict[str, dict[str, object]], args: argparse.Namespace, budget_seconds: float) -> list[Arm]:
    """Build one study per entry of ``arms`` (label -> settings overrides), run them interleaved with
    ``budget_seconds`` each, print the table; the studies live in a temporary folder (or ``--keep``)."""
    baseline, splits = load_baseline_and_data(args)
    device = resolve_device("cpu")
    print(machine_line(script, f"optuna {optuna.__version__}"))
    print(
        f"# ResNet-20 at 50 KB, {args.epochs_per_trial:g} epochs per trial, seed {args.seed}; {what}, "
        f"{budget_seconds / 60:g} min of wall time each, interleaved trial by trial\n"
    )
    with tempfile.TemporaryDirectory(dir=REPO_ROOT / "studies", prefix=f".{script}-") as scratch:
        root = args.keep or Path(scratch)
        built = [make_arm(label, overrides, args, root, baseline, splits, device) for label, overrides in arms.items()]
        run_interleaved(built, budget_seconds)
        print_arms(built)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = arm_arguments(__doc__.split("\n\n")[0], default_minutes=20)
    parser.add_argument("--pruner", default="median", choices=("median", "hyperband"))
    args = parser.parse_args(argv)
    budget_seconds = finish_arm_arguments(args)
    arms = {f"pruner-{args.pruner}": {"pruner": args.pruner}, "pruner-none": {"pruner": "none"}}
    pruned_arm, plain_arm = compare_arms("multi_fidelity", f"TPE, pruner {args.pruner} vs none", arms, args, budget_seconds)
    speedup = (pruned_arm.finished / pruned_arm.wall_seconds) / (plain_arm.finished / plain_arm.wall_seconds)
    print(
        f"\nRESULT: with the {args.pruner} pruner {speedup:.2f}x the trials per hour; best feasible val "
        f"{pruned_arm.best:.4f} vs {plain_arm.best:.4f} without pruning"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
