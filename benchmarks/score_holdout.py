"""Does the search over-fit its own score? Re-score a finished search's best plans on images it never saw.

A KL-scored search (``--trial-score kl``) measures every plan on the same fixed, seeded calibration images, with
BN re-estimated on the same fixed batches. A sampler that makes a hundred proposals against one fixed score can
find plans that suit those particular images rather than plans that are better. This script reads a finished
search's storage (read only) and re-scores, with no training:

* the projection warm start (trial 0, all coefficients at 1);
* the ``--top`` plans with the lowest KL the search saw;

on the search's own calibration images (this must repeat the stored KL) and on ``--draws`` fresh draws of
``--images`` training images with BN re-estimated on fresh batches, none of them among the search's calibration or
BN images. It prints each plan's KL per draw and its gain over the projection (in percent of the projection's KL),
so an advantage that holds only on the search's own images shows as a smaller gain on the fresh draws.

    python benchmarks/score_holdout.py studies/search_ab5bf16/resnet20-50KB-search-s5 [more study dirs]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import torch
from _common import REPO, machine_line

from autocompress.errors import AutocompressError
from autocompress.plan import Plan
from autocompress.search import TrialRecord, load_settings, open_storage
from autocompress.search._context import SearchContext, prepare_context
from autocompress.search._score import PlanScorer, ScoreSettings


def scored_plans(study_dir: Path, study_name: str, model: str, top: int) -> list[tuple[int, str, float, Plan]]:
    """(trial number, maker, stored KL, plan) of the warm start and the ``top`` lowest-KL plans, in that order."""
    storage = open_storage(f"sqlite:///{study_dir / 'study.db'}", heartbeat_seconds=None)
    study = optuna.load_study(study_name=study_name, storage=storage)
    done = {trial.number: (trial, float(trial.value)) for trial in
            study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if trial.value is not None}
    warm = next(number for number, (trial, _) in done.items() if TrialRecord.of(trial).strategy == "projection-warmstart")
    best = sorted((number for number in done if number != warm), key=lambda number: done[number][1])[:top]
    chosen = [(done[number][0], done[number][1]) for number in [warm, *best]]
    return [(trial.number, TrialRecord.of(trial).strategy or "?", kl, TrialRecord.of(trial).plan_for(model))
            for trial, kl in chosen]


def fresh_scorer(context: SearchContext, own: ScoreSettings, draw: int, images: int) -> PlanScorer:
    """A scorer on training images disjoint from the search's own calibration and BN images."""
    train = context.splits.train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(own.seed))
    unseen = train.subset(order[own.images + own.bn_images:])
    settings = ScoreSettings(images=images, bn_images=own.bn_images, seed=1000 + draw)
    return PlanScorer(context.baseline, unseen, device=context.device, settings=settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study_dirs", type=Path, nargs="+", help="folders of finished KL-scored searches")
    parser.add_argument("--top", type=int, default=5, help="lowest-KL plans re-scored per search")
    parser.add_argument("--draws", type=int, default=2, help="fresh draws of images")
    parser.add_argument("--images", type=int, default=2048, help="images per fresh draw")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    print(machine_line("score_holdout.py", f"top {args.top}, {args.draws} fresh draws of {args.images} images"))
    summary: list[tuple[str, float, float]] = []
    for study_dir in args.study_dirs:
        settings = load_settings(study_dir / "run.yaml", {"data_dir": str(args.data_dir)})
        context = prepare_context(settings, log=lambda _: None)
        own = settings.score_settings
        scorers = {"own": PlanScorer(context.baseline, context.splits.train, device=context.device, settings=own)}
        scorers.update({f"fresh{draw}": fresh_scorer(context, own, draw, args.images) for draw in range(args.draws)})
        plans = scored_plans(study_dir, settings.resolved_study_name, settings.model, args.top)
        print(f"\n{study_dir}  ({settings.resolved_study_name})")
        print(f"{'trial':>5}  {'maker':<22} {'stored':>7}  " + "  ".join(f"{name:>8}" for name in scorers)
              + "   gain own / fresh (% of the projection's KL)")
        table = {number: {name: scorer.score_plan(plan).kl for name, scorer in scorers.items()}
                 for number, _, _, plan in plans}
        warm = table[plans[0][0]]
        for number, maker, stored, _ in plans:
            kls = table[number]
            gain_own = 100 * (1 - kls["own"] / warm["own"])
            gain_fresh = statistics.mean(100 * (1 - kls[name] / warm[name]) for name in kls if name != "own")
            if number != plans[0][0]:
                summary.append((f"{study_dir.name}#{number}", gain_own, gain_fresh))
            print(f"{number:5d}  {maker:<22} {stored:7.4f}  " + "  ".join(f"{kls[name]:8.4f}" for name in scorers)
                  + f"   {gain_own:+5.1f} / {gain_fresh:+5.1f}")
    print(f"\nover {len(summary)} plans: gain on the search's own images {statistics.mean(g for _, g, _ in summary):+.1f} %, "
          f"on fresh images {statistics.mean(f for _, _, f in summary):+.1f} % of the projection's KL")


def run_reading_studies(entry: Callable[[], None], wanted: str) -> None:
    """Run ``entry``; a folder that is not a finished KL-scored search gives one ``error:`` line and exit code 2."""
    try:
        entry()
    except (AutocompressError, KeyError, StopIteration) as problem:
        print(f"error: {problem}: give {wanted} (study.db and run.yaml)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run_reading_studies(main, "folders of finished KL-scored searches")
