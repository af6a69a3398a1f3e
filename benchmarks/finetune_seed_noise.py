"""How much of a short fine-tune's verdict is its data order, and how much do shared seeds remove?

Reads finished KL-scored searches run with ``finetune_seeds`` 2 or more (read only, no training). Each short
fine-tune there recorded one KL per shared seed (``finetune_kls``), so for a finalist ``p`` and the projection warm
start ``0`` of the same search, fine-tuned under the same seeds ``a`` and ``b``, two kinds of comparison can be
formed from the same four fine-tunes:

* paired (common random numbers): ``KL_p(a) - KL_0(a)`` and ``KL_p(b) - KL_0(b)``;
* unpaired (each plan its own data order, as without ``finetune_seeds``): ``KL_p(a) - KL_0(b)`` and
  ``KL_p(b) - KL_0(a)``.

Half the squared gap between the two comparisons of one kind estimates that kind's variance, so the root mean
square of ``(first - second) / sqrt(2)`` over all finalists is the noise of one comparison of that kind. The ratio
of the two is what sharing the seeds bought. The script also prints every plan's KLs and where the projection
stood in each search, and checks that fine-tunes under the same seed of the same plan in two searches agree.

    python benchmarks/finetune_seed_noise.py studies/search_ab56crn/resnet56-100KB-search-s*
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import optuna
from _common import machine_line

from autocompress.search import TrialRecord

PROJECTION_STRATEGY = "projection-warmstart"


def finetunes_of(folder: Path) -> list[tuple[int, bool, list[int], list[float]]]:
    """(scored trial, is the projection, seeds, KL per seed) of every multi-seed short fine-tune in ``folder``."""
    storage = f"sqlite:///{folder / 'study.db'}"
    name = folder.name
    main = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    companion = optuna.load_study(study_name=f"{name}.finetune", storage=storage).get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    rows = []
    for trial in companion:
        record = TrialRecord.of(trial)
        kls = record.extra.get("finetune_kls")
        if record.fidelity != "finetune" or not kls:
            continue
        parent = record.parent or 0
        is_projection = TrialRecord.of(main[parent]).strategy == PROJECTION_STRATEGY
        rows.append((parent, is_projection, list(record.extra["finetune_seeds"]), [float(kl) for kl in kls]))
    return rows


def rms(values: list[float]) -> float:
    return math.sqrt(statistics.fmean(value * value for value in values)) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="finished searches run with finetune_seeds >= 2")
    args = parser.parse_args()
    print(machine_line("finetune_seed_noise.py", f"{len(args.folders)} searches"))
    paired_gaps, unpaired_gaps, projection_by_seed = [], [], {}
    for folder in args.folders:
        rows = finetunes_of(folder)
        projection = next((row for row in rows if row[1]), None)
        print(f"\n{folder.name}")
        for parent, is_projection, seeds, kls in sorted(rows, key=lambda row: statistics.fmean(row[3])):
            label = "projection" if is_projection else f"trial {parent}"
            print(f"  {label:>12}: " + ", ".join(f"seed {seed} {kl:.4f}" for seed, kl in zip(seeds, kls, strict=True))
                  + f"; mean {statistics.fmean(kls):.4f}")
        if projection is None or len(projection[3]) < 2:
            print("  (no multi-seed fine-tune of the projection: no comparisons)")
            continue
        for seed, kl in zip(projection[2], projection[3], strict=True):
            projection_by_seed.setdefault(seed, []).append((folder.name, kl))
        (seed_a, seed_b), (base_a, base_b) = projection[2][:2], projection[3][:2]
        for _, is_projection, seeds, kls in rows:
            if is_projection or seeds[:2] != [seed_a, seed_b]:
                continue
            plan_a, plan_b = kls[:2]
            paired_gaps.append(((plan_a - base_a) - (plan_b - base_b)) / math.sqrt(2))
            unpaired_gaps.append(((plan_a - base_b) - (plan_b - base_a)) / math.sqrt(2))
    print("\nthe projection's KL under each seed, by search (the same plan and seed should agree to rounding):")
    for seed, found in sorted(projection_by_seed.items()):
        print(f"  seed {seed}: " + ", ".join(f"{name} {kl:.4f}" for name, kl in found))
    paired, unpaired = rms(paired_gaps), rms(unpaired_gaps)
    print(f"\nnoise of one finalist-vs-projection comparison over {len(paired_gaps)} finalists (KL units):"
          f"\n  paired, shared seed (common random numbers): {paired:.4f}"
          f"\n  unpaired, each its own seed:                 {unpaired:.4f}"
          f"\n  ratio paired / unpaired: {paired / unpaired:.2f}" if unpaired_gaps else "\nno finalist had two shared seeds")


if __name__ == "__main__":
    main()
