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

Last, for every finalist whose plan also had the final fine-tune in that study (the companion's ``final`` trials,
this run's and earlier runs' on a copied output root), it sets each earlier signal's gain over the projection
(KL on the search's images, on the re-score's fresh images, and KL, top-1 agreement and validation accuracy after
the shared-seed short fine-tune) beside the final test accuracy's gain over the projection arm of the same seed
(``search_ab.py``'s sibling folder ``…-projection-s<seed>``), and prints each signal's Spearman correlation with it.
That table reads test accuracy, so it only reports; nothing in the search uses it.

    python benchmarks/finetune_seed_noise.py studies/search_ab56crn/resnet56-100KB-search-s*
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from _common import machine_line
from scipy.stats import spearmanr

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


@dataclass
class FinalistSignals:
    """One finalist's gains over the projection of its own search at each level, and after the final fine-tune."""

    search: str
    trial: int
    search_kl: float
    fresh_kl: float
    finetune_kl: float
    finetune_agreement: float
    finetune_val_accuracy: float
    final_test_accuracy: float


SIGNALS = {"search_kl": "KL, the search's own images", "fresh_kl": "KL, fresh images (re-score)",
           "finetune_kl": "KL after the short fine-tune", "finetune_agreement": "top-1 agreement after it",
           "finetune_val_accuracy": "val accuracy after it"}


def finalist_signals(folder: Path) -> list[FinalistSignals]:
    """The signals of every finalist of ``folder`` with a final fine-tune, against the projection (empty when the
    projection arm beside it, or the projection's re-score or shared-seed fine-tune, is missing)."""
    projection_yaml = folder.with_name(folder.name.replace("-search-", "-projection-")) / "best.yaml"
    if not projection_yaml.is_file():
        return []
    projection_test = float(yaml.safe_load(projection_yaml.read_text())["result"]["accuracy"]["test"])
    storage = f"sqlite:///{folder / 'study.db'}"
    main = optuna.load_study(study_name=folder.name, storage=storage).get_trials(deepcopy=False)
    companion = optuna.load_study(study_name=f"{folder.name}.finetune", storage=storage).get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    by_level: dict[tuple[str, int], tuple[optuna.trial.FrozenTrial, TrialRecord]] = {}
    for trial in companion:
        record = TrialRecord.of(trial)
        if record.fidelity == "finetune" and "finetune_kls" not in record.extra:
            continue  # a fine-tune under each plan's own seed: not comparable with the shared-seed ones
        by_level[(record.fidelity or "", record.parent or 0)] = (trial, record)
    projection = next((trial.number for trial in main if TrialRecord.of(trial).strategy == PROJECTION_STRATEGY), None)
    if projection is None or ("rescore", projection) not in by_level or ("finetune", projection) not in by_level:
        return []
    base_fresh = by_level[("rescore", projection)][0]
    base_tuned, base_record = by_level[("finetune", projection)]
    found = []
    for (level, parent), (_, final_record) in sorted(by_level.items()):
        if level != "final" or parent == projection or ("finetune", parent) not in by_level or ("rescore", parent) not in by_level:
            continue
        tuned, tuned_record = by_level[("finetune", parent)]
        found.append(FinalistSignals(
            search=folder.name, trial=parent,
            search_kl=float(main[parent].value or 0.0) - float(main[projection].value or 0.0),
            fresh_kl=float(by_level[("rescore", parent)][0].value or 0.0) - float(base_fresh.value or 0.0),
            finetune_kl=float(tuned.value or 0.0) - float(base_tuned.value or 0.0),
            finetune_agreement=float(tuned_record.agreement or 0.0) - float(base_record.agreement or 0.0),
            finetune_val_accuracy=float(tuned_record.val_accuracy or 0.0) - float(base_record.val_accuracy or 0.0),
            final_test_accuracy=float(final_record.test_accuracy or 0.0) - projection_test))
    return found


def print_signals(finalists: list[FinalistSignals]) -> None:
    """Each finalist's gains, then each signal's Spearman correlation with the final accuracy's gain. A signal
    that ranks faithfully correlates negatively for the KLs (lower is better) and positively for the others."""
    if len(finalists) < 3:
        print("\nfewer than 3 finalists with a final fine-tune and a projection arm beside them: no correlations")
        return
    print(f"\ngains over the projection of the same seed, {len(finalists)} finalists with a final fine-tune "
          "(test accuracy only reports):")
    print("  search           trial  " + "  ".join(f"{name:>21}" for name in SIGNALS) + "  final test (points)")
    for one in finalists:
        print(f"  {one.search:<16} {one.trial:>5}  " + "  ".join(f"{getattr(one, name):>+21.4f}" for name in SIGNALS)
              + f"  {100 * one.final_test_accuracy:>+19.2f}")
    finals = [one.final_test_accuracy for one in finalists]
    print("Spearman correlation with the final test accuracy's gain (a faithful KL: negative; agreement, accuracy: positive):")
    for name, meaning in SIGNALS.items():
        rho = spearmanr([getattr(one, name) for one in finalists], finals).statistic
        print(f"  {meaning:<32} {rho:+.2f}")


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
    print_signals([one for folder in args.folders for one in finalist_signals(folder)])


if __name__ == "__main__":
    main()
