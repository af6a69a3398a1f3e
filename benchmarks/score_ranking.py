"""Does a cheap score rank plans the way a real fine-tune does? Spearman correlations against the reference.

Reads the plans and the reference of ``ranking_truth.py`` (test accuracy after a 1-epoch fine-tune of each
plan, same lr, seed and schedule) and puts next to it:

* ``quarter_val``: today's trial score, validation accuracy after a 0.25-epoch fine-tune (from the truth file);
* ``kl``: the cheap score, KL(baseline || compressed) on fixed training images after BN re-estimation, with no
  training, for several sizes of the calibration and BN sets;
* ``kl+N steps``: the same after N distillation steps under the plan;
* ``quarter_kl``: the KL of the quarter-epoch fine-tuned models (the second fidelity level's score).

A good score correlates negatively with accuracy (lower KL, better model); the table prints Spearman's rho
of ``-score`` (and of ``quarter_val`` as it is) with the reference, so higher is better for every row, and
the seconds per plan. The test split only reports here: nothing is chosen by it.

    python benchmarks/score_ranking.py --truth benchmarks/results/ranking-resnet20-50KB
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import machine_line, verdict
from scipy.stats import spearmanr

from autocompress.allocation import PlanScorer, ScoreSettings
from autocompress.data import prepare_splits
from autocompress.engine import resolve_device
from autocompress.models import build_model, load_checkpoint
from autocompress.pipeline import harden_and_measure
from autocompress.plan import Plan

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
VARIANTS = {  # name -> settings of the cheap score
    "kl 1024/512": ScoreSettings(images=1024, bn_images=512),
    "kl 2048/1024": ScoreSettings(images=2048, bn_images=1024),
    "kl 4096/2048": ScoreSettings(images=4096, bn_images=2048),
}


def rho(score: list[float], reference: list[float]) -> float:
    return float(spearmanr(score, reference).statistic)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truth", type=Path, required=True, help="a folder written by ranking_truth.py")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--weights-dir", type=Path, default=REPO.parent / "shared" / "weights" / "akamaster")
    parser.add_argument("--variants", help="comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--bar", type=float, default=0.9, help="the least Spearman rho the default cheap score must reach")
    args = parser.parse_args()
    truth = json.loads((args.truth / "truth.json").read_text())
    plans = {path.stem: Plan.load(path) for path in sorted((args.truth / "plans").glob("*.yaml"))}
    names = [name for name in plans if "epoch_test" in truth.get(name, {})]
    model_spec = next(iter(plans.values())).model
    print(machine_line("score_ranking.py", f"{model_spec}, {len(names)} plans with a reference"))
    device = resolve_device("cpu")
    splits = prepare_splits("cifar10", args.data_dir, val_size=5000, split_seed=0)
    baseline = build_model(model_spec)
    load_checkpoint(baseline, args.weights_dir / WEIGHTS[model_spec])
    baseline.eval()
    reference = [truth[name]["epoch_test"] for name in names]
    rows: list[tuple[str, float, float]] = [("quarter_val (today: 0.25-epoch fine-tune, val accuracy)",
                                              rho([truth[name]["quarter_val"] for name in names], reference),
                                              statistics.mean(truth[name]["quarter_seconds"] for name in names))]
    chosen = [name.strip() for name in args.variants.split(",")] if args.variants else list(VARIANTS)
    scores: dict[str, dict[str, float]] = {}
    for variant in chosen:
        scorer = PlanScorer(baseline, splits.train, device=device, settings=VARIANTS[variant])
        results = {name: scorer.score_plan(plans[name]) for name in names}
        scores[variant] = {name: result.kl for name, result in results.items()}
        rows.append((variant, rho([-results[name].kl for name in names], reference),
                     statistics.median(result.seconds for result in results.values())))
    models = args.truth / "models"
    if all((models / f"{name}.pt").is_file() for name in names):
        scorer = PlanScorer(baseline, splits.train, device=device, settings=ScoreSettings())
        quarter_kl = []
        started = time.perf_counter()
        for name in names:
            student = build_model(model_spec)
            load_checkpoint(student, models / f"{name}.pt")
            hardened = harden_and_measure(student, plans[name], model_spec=model_spec, num_classes=10, device=device).model
            quarter_kl.append(scorer.score_model(hardened).kl)
        scores["quarter_kl"] = dict(zip(names, quarter_kl))
        rows.append(("quarter_kl (KL after the 0.25-epoch fine-tune)", rho([-kl for kl in quarter_kl], reference),
                     (time.perf_counter() - started) / len(names)))
    print(f"\n{'score':58s} {'Spearman rho':>12s} {'s/plan':>8s}")
    for name, value, seconds in rows:
        print(f"{name:58s} {value:12.3f} {seconds:8.1f}")
    print("\nper plan (reference = test top-1 after 1 epoch):")
    header = "  ".join(f"{variant[:14]:>14s}" for variant in scores)
    print(f"{'plan':18s} {'reference':>9s} {'quarter_val':>11s}  {header}")
    for name in sorted(names, key=lambda item: -truth[item]["epoch_test"]):
        cells = "  ".join(f"{scores[variant][name]:14.4f}" for variant in scores)
        print(f"{name:18s} {truth[name]['epoch_test']:9.4f} {truth[name]['quarter_val']:11.4f}  {cells}")
    write_scores(args.truth / "scores.json", rows, scores)
    cheap = [row for row in rows[1:] if "steps" not in row[0] and "quarter" not in row[0]]
    default = next(row for row in cheap if row[0] == "kl 1024/512") if any(row[0] == "kl 1024/512" for row in cheap) else cheap[0]
    quarter_row = next((row for row in rows if row[0].startswith("quarter_kl")), None)
    second_level = quarter_row is None or quarter_row[1] >= rows[0][1]
    return verdict(default[1] >= args.bar and second_level,
                   f"the default training-free score {default[0]!r} ranks with rho {default[1]:.3f} (bar {args.bar}) in "
                   f"{default[2]:.1f} s per plan, against {rows[0][1]:.3f} in {rows[0][2]:.1f} s for today's 0.25-epoch "
                   f"validation accuracy; the KL after the 0.25-epoch fine-tune (the second level) "
                   f"{'ranks at least as well' if second_level else 'ranks worse'}")

def write_scores(path: Path, rows: list[tuple[str, float, float]], scores: dict[str, dict[str, float]]) -> None:
    """Merge this run's rows and per-plan scores into ``path``: a run of a few ``--variants`` replaces those
    variants and keeps the others an earlier run wrote."""
    earlier = json.loads(path.read_text()) if path.is_file() else {"rows": [], "scores": {}}
    fresh = {row[0] for row in rows}
    merged_rows = [list(row) for row in earlier["rows"] if row[0] not in fresh] + [list(row) for row in rows]
    path.write_text(json.dumps({"rows": merged_rows, "scores": {**earlier["scores"], **scores}}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
