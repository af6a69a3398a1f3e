"""Today's default recipe against the first version's, at the same whole-job time (``--time``), on several seeds.

Each arm is ``autocompress search --config PRESET --time T --seed S`` run as a user runs it (a subprocess, so
its wall time is the user's), one arm after the other within a seed, the arms' order alternating from seed to
seed. The test accuracy and the bytes come from the packed file (``best.acz``) loaded back, as
``autocompress evaluate --packed`` does; the test split only reports. Prints every seed, both arms' mean and
spread, and the difference per seed; the verdict is the pre-registered rule (docs/experiments/): the new
default wins when its mean over the seeds is ahead of the old one's.

    python benchmarks/default_ab.py --old benchmarks/presets/resnet20-50KB-v1.yaml \\
        --new studies/resnet20-50KB.yaml --time 14m --seeds 0,1,2

``--old-commit REV`` runs the old arm with the code of that commit (a detached ``git worktree`` under the
output root, first on its ``PYTHONPATH``) and the new arm with this checkout's: an A/B of the code at the same
preset, e.g. packed format 1 against format 2 (issue 40)::

    python benchmarks/default_ab.py --old studies/resnet20-50KB.yaml --old-commit 852c558 \\
        --new studies/resnet20-50KB.yaml --time 14m --seeds 0,1,2 --output-root studies/format_ab
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
from typing import Any

import optuna
import torch
import yaml
from _common import REPO, machine_line, verdict

from autocompress.data import prepare_splits
from autocompress.engine import evaluate
from autocompress.pack import read_packed
from autocompress.study import TrialRecord


def run_arm(args: argparse.Namespace, arm: str, preset: Path, seed: int) -> dict[str, Any]:
    """Run (or reuse, when its best.acz exists) one arm; its test accuracy, bytes, returned trial and wall time.
    An arm without its best.acz runs again from the start."""
    name = f"{arm}-s{seed}"
    folder = args.output_root / name
    log = args.output_root / f"{name}.log"
    if not (folder / "best.acz").is_file():
        if folder.exists():  # an arm cut short (Ctrl-C, a stopped machine): resuming its study would not be equal time
            print(f"{name}: an unfinished arm's folder is removed and the arm runs again from the start", flush=True)
            shutil.rmtree(folder)
        command = [sys.executable, "-m", "autocompress.cli", "search", "--config", str(preset), "--time", args.time,
                   "--seed", str(seed), "--study-name", name, "--output-root", str(args.output_root),
                   "--data-dir", str(args.data_dir)]
        args.output_root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if arm == "old" and args.old_commit:
            # PYTHONSAFEPATH: `python -m` would otherwise put the working directory (this checkout) ahead of PYTHONPATH
            env.update(PYTHONPATH=str(old_checkout(args)), PYTHONSAFEPATH="1")
        started = time.perf_counter()
        with open(log, "w") as stream:
            done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=env, check=False)
        minutes = (time.perf_counter() - started) / 60
        if done.returncode != 0:
            raise SystemExit(f"{name} failed (exit {done.returncode}); see {log}")
        (folder / "wall_minutes.txt").write_text(f"{minutes:.2f}\n")
    result = yaml.safe_load((folder / "best.yaml").read_text())["result"]
    packed = read_packed(folder / "best.acz")
    splits = prepare_splits("cifar10", args.data_dir, download=False)
    test = evaluate(packed.model, splits.test, device=torch.device("cpu"))
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}")
    maker = TrialRecord.of(study.get_trials(deepcopy=False)[result["trial"]]).strategy
    return {"test": test, "bytes": (folder / "best.acz").stat().st_size, "trial": result["trial"], "maker": maker,
            "minutes": float((folder / "wall_minutes.txt").read_text())}


def old_checkout(args: argparse.Namespace) -> Path:
    """A detached worktree of ``--old-commit`` under the output root (made once)."""
    folder = (args.output_root / f"checkout-{args.old_commit}").resolve()
    if not (folder / "autocompress").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), args.old_commit], check=True)
    return folder


def spread(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"mean {statistics.fmean(values):.2%}  spread (std) {100 * std:.2f} points"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, default=REPO / "benchmarks" / "presets" / "resnet20-50KB-v1.yaml")
    parser.add_argument("--new", type=Path, default=REPO / "studies" / "resnet20-50KB.yaml")
    parser.add_argument("--time", default="14m", help="the whole job's time, both arms (--time)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output-root", type=Path, default=REPO / "studies" / "default_ab",
                        help="kept, so that a rerun reuses finished arms (delete it to run them again)")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--old-commit", default=None, metavar="REV",
                        help="run the old arm with the code of this commit (a git worktree under the output root)")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    old_code = f" at {args.old_commit}" if args.old_commit else ""
    print(machine_line("default_ab.py", f"old {args.old.name}{old_code}, new {args.new.name}, --time {args.time}"), flush=True)
    rows = []
    for index, seed in enumerate(seeds):
        order = [("old", args.old), ("new", args.new)]
        results = {arm: run_arm(args, arm, preset, seed) for arm, preset in (order if index % 2 == 0 else order[::-1])}
        old, new = results["old"], results["new"]
        rows.append((seed, old, new))
        print(f"seed {seed}: new {new['test']:.2%} ({new['bytes']:,} B, trial {new['trial']} by {new['maker']}, {new['minutes']:.1f} min)  "
              f"old {old['test']:.2%} ({old['bytes']:,} B, trial {old['trial']} by {old['maker']}, {old['minutes']:.1f} min)  "
              f"difference {100 * (new['test'] - old['test']):+.2f} points", flush=True)
    differences = [100 * (new["test"] - old["test"]) for _, old, new in rows]
    print(f"new: {spread([new['test'] for _, _, new in rows])}")
    print(f"old: {spread([old['test'] for _, old, _ in rows])}")
    std = statistics.stdev(differences) if len(differences) > 1 else 0.0
    print(f"difference: mean {statistics.fmean(differences):+.2f} points, sample std {std:.2f}, per seed "
          + ", ".join(f"{difference:+.2f}" for difference in differences))
    mean = statistics.fmean(differences)
    return verdict(mean > 0, f"the new default is {'ahead of' if mean > 0 else 'not ahead of'} the old by {mean:+.2f} points "
                             f"(mean of {len(rows)} seeds at --time {args.time})")


if __name__ == "__main__":
    raise SystemExit(main())
