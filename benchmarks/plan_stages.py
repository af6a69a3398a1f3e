"""Where does a plan spend its bytes? Per-stage kept weights and bits of saved plans, with their test accuracy.

Reads ``best.yaml`` files (or folders holding them, searched recursively) and the rows of a study's ``trials.csv``
(``autocompress report`` writes it, one column per layer setting), groups each plan's layers by stage (``conv1``
the stem, ``layerN.*`` stage N, the classifier the head) and prints, per stage, the fraction of weights kept and
the mean bits of the kept weights, both weighted by the layers' weight counts, next to the test accuracy the
plan's ``result`` records (for a trial, the one given with ``--trial NUMBER=TEST``). It reads files only: no
data, no training.

    mkdir -p /tmp/arms && tar xzf benchmarks/results/gpu-ab-resnet20-50KB/gpu_ab-arms.tar.gz -C /tmp/arms
    python benchmarks/plan_stages.py /tmp/arms benchmarks/results/resnet20-50KB-aim16*/best.yaml
    python benchmarks/plan_stages.py --model resnet20 --trial 86=0.9074 --trial 67=0.9141 \
        benchmarks/results/plan-stages-resnet20-50KB/search_ab20-s2-trials.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from autocompress.compress import layer_weight_counts
from autocompress.errors import PlanError
from autocompress.models import build_model
from autocompress.plan import LayerSetting, Plan

HEAD_NAMES = ("linear", "fc")


@dataclass(frozen=True)
class StageShare:
    """One stage of one plan: the fraction of its weights kept and their mean bits."""

    kept_fraction: float
    mean_bits: float


def stage_of(layer_name: str) -> str:
    """``layer2.1.conv1`` -> ``layer2``; the stem and the classifier get their own names."""
    first = layer_name.split(".")[0]
    if first.startswith("layer"):
        return first
    return "head" if first in HEAD_NAMES else "stem"


def stage_shares(plan: Plan, weight_counts: Mapping[str, int]) -> dict[str, StageShare]:
    """Per stage, in the plan's layer order: kept fraction and kept-weight mean bits, weighted by weight count."""
    totals: dict[str, list[float]] = {}  # stage -> [weights, kept weights, kept weights x bits]
    for name, setting in plan.layers.items():
        count = weight_counts[name]
        kept = count * (1.0 - setting.sparsity)
        sums = totals.setdefault(stage_of(name), [0.0, 0.0, 0.0])
        sums[0] += count
        sums[1] += kept
        sums[2] += kept * setting.bits
    return {
        stage: StageShare(kept_fraction=kept / weights, mean_bits=bit_sum / kept if kept else 0.0)
        for stage, (weights, kept, bit_sum) in totals.items()
    }


def plan_files(paths: Iterable[Path]) -> list[Path]:
    """Every ``best.yaml`` named or found under the given paths, sorted; a missing path is an error."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.rglob("best.yaml")))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return found


def trial_plans(csv_path: Path, model: str, tests: Mapping[int, float | None]) -> list[tuple[str, Plan]]:
    """The main study's scored trials of a ``trials.csv`` (only the numbers in ``tests`` if it names any), as plans
    labelled ``<study>-t<number>``, each carrying the given test accuracy."""
    rows = []
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("state") != "COMPLETE" or row.get("fidelity", "score") != "score":
                continue
            number = int(row["number"])
            if tests and number not in tests:
                continue
            layer_names = [column[: -len(".sparsity")] for column in row if column.endswith(".sparsity")]
            layers = {name: LayerSetting(sparsity=float(row[f"{name}.sparsity"]), bits=int(float(row[f"{name}.bits"])),
                                         quantizer=row.get(f"{name}.quantizer") or "clipq")
                      for name in layer_names}
            test = tests.get(number)
            result = {"trial": number, "accuracy": {"test": test}} if test is not None else {"trial": number}
            rows.append((f"{row['study']}-t{number}", Plan(layers=layers, model=model, result=result)))
    return rows


def parse_trial(text: str) -> tuple[int, float | None]:
    """``86=0.9074`` -> (86, 0.9074); ``86`` -> (86, None)."""
    number, _, test = text.partition("=")
    try:
        return int(number), (float(test) if test else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NUMBER or NUMBER=TEST_ACCURACY, got {text!r}") from None


def plan_label(path: Path) -> str:
    """The folder a ``best.yaml`` lies in names its run."""
    return path.parent.name if path.name == "best.yaml" else path.stem


def test_accuracy(plan: Plan) -> float | None:
    accuracy = plan.result.get("accuracy", {}) if isinstance(plan.result, dict) else {}
    value = accuracy.get("test") if isinstance(accuracy, dict) else None
    return float(value) if value is not None else None


def format_table(rows: list[tuple[str, Plan, dict[str, StageShare]]]) -> str:
    stages = list(dict.fromkeys(stage for _, _, shares in rows for stage in shares))
    width = max((len(label) for label, _, _ in rows), default=4)
    header = f"{'plan':<{width}}  " + "  ".join(f"{stage + ' kept/bits':>17}" for stage in stages) + "      test"
    lines = [header]
    for label, plan, shares in rows:
        cells = []
        for stage in stages:
            share = shares.get(stage)
            cells.append(f"{share.kept_fraction:>10.3f}/{share.mean_bits:>4.2f}" if share else f"{'-':>15}")
        test = test_accuracy(plan)
        lines.append(
            f"{label:<{width}}  " + "  ".join(f"{cell:>17}" for cell in cells)
            + (f"  {100 * test:7.2f}%" if test is not None else "         -")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path,
                        help="best.yaml files, folders searched for them, or a study's trials.csv")
    parser.add_argument("--model", help="the model of the plans in a trials.csv (it does not name one)")
    parser.add_argument("--trial", type=parse_trial, action="append", default=[],
                        help="NUMBER[=TEST]: show only these trials of each trials.csv given, with their test accuracy (0-1)")
    args = parser.parse_args(argv)
    csv_paths = [path for path in args.paths if path.suffix == ".csv"]
    if csv_paths and args.model is None:
        parser.error("a trials.csv does not name its model: give --model")
    try:
        files = plan_files([path for path in args.paths if path.suffix != ".csv"])
    except FileNotFoundError as error:
        parser.error(str(error))
    try:
        plans = [(plan_label(path), Plan.load(path)) for path in files]
    except PlanError as error:
        parser.error(str(error))
    for csv_path in csv_paths:
        if not csv_path.is_file():
            parser.error(f"{csv_path} does not exist")
        plans.extend(trial_plans(csv_path, args.model, dict(args.trial)))
    if not plans:
        parser.error("no plan found under the given paths")
    counts_by_model: dict[str, dict[str, int]] = {}
    rows = []
    for label, plan in plans:
        if plan.model is None:
            parser.error(f"{label}: the plan names no model, so its layers' weight counts are unknown")
        if plan.model not in counts_by_model:
            counts_by_model[plan.model] = layer_weight_counts(build_model(plan.model))
        rows.append((label, plan, stage_shares(plan, counts_by_model[plan.model])))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
