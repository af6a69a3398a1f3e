"""The bar: does the search's plan beat its best warm start (the projection) after the same final fine-tune?

Two arms per seed, the same final fine-tune (``--final-epochs``, the preset's lr, the seed, and whatever
``--common`` sets for both, such as distillation):

* ``search``: ``autocompress search`` as configured (by default the coefficient space, the cheap KL score,
  CMA-ES, the best few plans fine-tuned briefly), which returns one plan and fine-tunes it;
* ``projection``: ``autocompress search --mode projection``, the warm start alone, fine-tuned the same way.

Test accuracy is read from each arm's ``best.yaml`` (measured on the hardened model the ``best.acz`` holds;
the test split only reports). Prints every seed, the mean and spread of both arms and of their difference,
and who made each returned plan (a warm start or the sampler). The verdict is the issue's bar: a mean gain
of at least 0.3 points, and the sampler's own plan returned in at least 2 of 3 seeds.

    python benchmarks/search_ab.py --config studies/resnet20-50KB.yaml --seeds 0,1,2 --final-epochs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import optuna
from _common import add_ab_arguments, machine_line, run_arm, verdict

from autocompress.study import TrialRecord

REPO = Path(__file__).resolve().parents[1]
SEARCH = {"space": "coefficients", "trial_score": "kl", "sampler": "cmaes"}


def arm(args: argparse.Namespace, name: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) one arm; its test accuracy, bytes, the returned trial's maker and the wall time."""
    settings, result, minutes = run_arm(args, name, seed, overrides)
    study = optuna.load_study(study_name=settings.resolved_study_name, storage=settings.resolved_storage)
    chosen = study.get_trials(deepcopy=False)[result["trial"]]
    return {"test": result["accuracy"]["test"], "bytes": result["packed_bytes"], "trial": result["trial"],
            "maker": TrialRecord.of(chosen).strategy, "minutes": minutes, "trials": len(study.trials)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ab_arguments(parser, output_root="search_ab", common="{}",
                     common_help='settings both arms share, as JSON (for example \'{"distill": true}\')')
    parser.add_argument("--trials", type=int, help="the search arm's trials (default: the preset's)")
    parser.add_argument("--search", default=json.dumps(SEARCH), help="the search arm's settings, as JSON")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    common = json.loads(args.common)
    search = {**common, **json.loads(args.search), **({"trials": args.trials} if args.trials else {})}
    print(machine_line("search_ab.py", f"{args.config.name}, final fine-tune {args.final_epochs:g} epoch(s), "
                                       f"both arms {common}, search {search}"))
    rows = []
    for seed in seeds:
        found = arm(args, "search", seed, search)
        warm = arm(args, "projection", seed, {**common, "mode": "projection"})
        rows.append((seed, found, warm))
        print(seed_line(seed, found, warm), flush=True)
    gain, own = summarize(rows)
    return verdict(gain >= 0.3 and own >= min(2, len(rows)),
                   f"mean gain {gain:+.2f} points (bar +0.30), sampler's plan returned in {own}/{len(rows)}")


def seed_line(seed: int, found: dict[str, Any], warm: dict[str, Any]) -> str:
    """One seed's two arms and their difference."""
    return (f"seed {seed}: search {found['test']:.2%} ({found['bytes']:,} B, trial {found['trial']} by {found['maker']}, "
            f"{found['minutes']:.1f} min)  projection {warm['test']:.2%} ({warm['bytes']:,} B, {warm['minutes']:.1f} min)  "
            f"difference {100 * (found['test'] - warm['test']):+.2f} points")


def summarize(rows: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> tuple[float, int]:
    """Print both arms' mean and spread, the differences, and how often the sampler's own plan was returned;
    return the mean difference (points) and that count."""
    searched = [found["test"] for _, found, _ in rows]
    projected = [warm["test"] for _, _, warm in rows]
    gains = [100 * (a - b) for a, b in zip(searched, projected)]
    own = sum(not str(found["maker"]).endswith("-warmstart") for _, found, _ in rows)
    spread = f", sample std {statistics.stdev(gains):.2f}" if len(gains) > 1 else ""
    print(f"\nsearch:     mean {statistics.mean(searched):.2%}  spread (std) {100 * statistics.pstdev(searched):.2f} points")
    print(f"projection: mean {statistics.mean(projected):.2%}  spread (std) {100 * statistics.pstdev(projected):.2f} points")
    print(f"difference: mean {statistics.mean(gains):+.2f} points{spread}, per seed {', '.join(f'{gain:+.2f}' for gain in gains)}")
    print(f"the returned plan was the sampler's own in {own} of {len(rows)} seeds")
    return statistics.mean(gains), own


if __name__ == "__main__":
    raise SystemExit(main())
