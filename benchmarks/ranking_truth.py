"""The ground truth behind ``score_ranking.py``: diverse plans at one budget, each fine-tuned the same way.

For one model and target this writes a set of plans that all fit the target (the three warm starts,
random plans of the absolute space repaired onto the budget, and projections with random per-layer
sensitivity coefficients: points of the new search space), then gives every plan

* today's trial score: validation accuracy after a 0.25-epoch in-parallel pruning-quantization
  fine-tune (``quarter_val``), and
* the reference: test accuracy after a 1-epoch fine-tune (``epoch_test``; same lr, seed and schedule
  for every plan). The test split only reports here: nothing is chosen by it.

Results are cached per plan in ``<out>/truth.json`` (resumable: finished plans are skipped), so the
cheap scores can be re-measured against them as often as needed (``score_ranking.py``). The
quarter-epoch models' full-precision weights are kept in ``--models-dir`` (not in the repository),
so scores taken after that short fine-tune can be measured later too.

    python benchmarks/ranking_truth.py --model resnet20 --target 50KB --out benchmarks/results/ranking-resnet20-50KB
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from autocompress.data import prepare_splits
from autocompress.engine import evaluate, resolve_device
from autocompress.models import build_model, load_checkpoint
from autocompress.pack import SizeAccountant
from autocompress.pipeline import finetune_under_plan_, harden_and_measure
from autocompress.plan import LayerSetting, Plan

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
BOUNDS = {"sparsity_max": 0.95, "bits_min": 2, "bits_max": 6}


def make_plans(baseline: torch.nn.Module, model: str, target: int, splits, device, n_random: int, n_coefficient: int) -> dict[str, Plan]:
    """The plans, by name; every one fits ``target`` by the exact accountant."""
    from autocompress.allocation import SearchSpace, best_uniform_plan, fit_to_budget, project_to_budget, sensitivity_plan
    from autocompress.compress import compressible_layers

    sizes = SizeAccountant(baseline, model_spec=model)
    space = SearchSpace(layers=tuple(compressible_layers(baseline)), sparsity_max=BOUNDS["sparsity_max"],
                        bits_min=BOUNDS["bits_min"], bits_max=BOUNDS["bits_max"])
    plans: dict[str, Plan] = {}
    uniform = best_uniform_plan(sizes, space, target)
    plans["uniform"] = uniform
    plans["projection"] = project_to_budget(sizes, space, target, seed=uniform).plan
    subset = splits.val.subset(torch.arange(1000))
    plans["sensitivity"] = sensitivity_plan(sizes, space, target, uniform, lambda m: evaluate(m, subset, device=device))
    rng = random.Random(0)
    for index in range(n_random):
        proposal = Plan({name: LayerSetting(rng.uniform(0.0, space.sparsity_max), rng.randint(space.bits_min, space.bits_max))
                         for name in space.layers})
        plans[f"random-{index}"] = fit_to_budget(sizes, proposal, space, target)
    for index in range(n_coefficient):
        coefficients = {name: math.exp(rng.gauss(0.0, 1.0)) for name in space.layers}
        plans[f"coefficients-{index}"] = weighted_projection(baseline, model, space, target, coefficients, uniform)
    for name, plan in plans.items():
        plan.model = model
        assert sizes.total(plan) <= target, name
    return plans


def weighted_projection(baseline, model, space, target, coefficients, seed_plan) -> Plan:
    """The projection minimising sum_l c_l * ||W_l - Q(W_l)||^2: the projection of weights scaled by sqrt(c_l)
    (magnitude masks, the CLIP-Q levels and the exact size are invariant to a layer's scale)."""
    import copy

    from autocompress.allocation import project_to_budget
    from autocompress.compress import compressible_layers

    scaled = copy.deepcopy(baseline)
    with torch.no_grad():
        for name, layer in compressible_layers(scaled).items():
            layer.weight.mul_(math.sqrt(coefficients[name]))
    return project_to_budget(SizeAccountant(scaled, model_spec=model), space, target, seed=seed_plan).plan


def fine_tuned(baseline, plan: Plan, model: str, splits, device, epochs: float, seed: int, measure_test: bool,
               keep: Path | None = None):
    import copy

    from autocompress.models import save_checkpoint

    student = copy.deepcopy(baseline)
    finetune_under_plan_(student, plan, splits.train, device=device, epochs=epochs, lr=0.01, batch_size=128, seed=seed,
                         progress=False)
    if keep is not None:
        save_checkpoint(keep, student, model_spec=model, epochs=epochs)
    return harden_and_measure(student, plan, model_spec=model, num_classes=10, device=device, splits=splits,
                              measure_test=measure_test)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=sorted(WEIGHTS))
    parser.add_argument("--target", default="50KB")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--weights-dir", type=Path, default=REPO.parent / "shared" / "weights" / "akamaster")
    parser.add_argument("--random", type=int, default=6, help="random plans of the absolute space, repaired")
    parser.add_argument("--coefficients", type=int, default=6, help="projections with random per-layer coefficients")
    parser.add_argument("--epochs", type=float, default=1.0, help="the reference fine-tune")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models-dir", type=Path, help="keep each quarter-epoch model here (default <out>/models)")
    args = parser.parse_args()
    from autocompress.units import parse_size

    target = parse_size(args.target)
    device = resolve_device("cpu")
    splits = prepare_splits("cifar10", args.data_dir, val_size=5000, split_seed=0)
    baseline = build_model(args.model, num_classes=10)
    load_checkpoint(baseline, args.weights_dir / WEIGHTS[args.model])
    baseline.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    plan_dir = args.out / "plans"
    if not plan_dir.is_dir():
        plans = make_plans(baseline, args.model, target, splits, device, args.random, args.coefficients)
        plan_dir.mkdir()
        for name, plan in plans.items():
            plan.target_bytes = target
            plan.save(plan_dir / f"{name}.yaml")
    plans = {path.stem: Plan.load(path) for path in sorted(plan_dir.glob("*.yaml"))}
    models_dir = args.models_dir or args.out / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    truth_path = args.out / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.is_file() else {}
    print(f"{len(plans)} plans for {args.model} at {target:,} B; {sum(name in truth for name in plans)} already measured", flush=True)
    for name, plan in plans.items():
        record = truth.get(name, {})
        if "quarter_val" not in record or not (models_dir / f"{name}.pt").is_file():
            started = time.perf_counter()
            quarter = fine_tuned(baseline, plan, args.model, splits, device, 0.25, args.seed, measure_test=False,
                                 keep=models_dir / f"{name}.pt")
            record.update(quarter_val=quarter.val_accuracy, quarter_seconds=time.perf_counter() - started)
        if "epoch_test" not in record:
            started = time.perf_counter()
            full = fine_tuned(baseline, plan, args.model, splits, device, args.epochs, args.seed, measure_test=True)
            record.update(epoch_test=full.test_accuracy, epoch_val=full.val_accuracy, epoch_bytes=full.size.total,
                          epoch_seconds=time.perf_counter() - started, epochs=args.epochs)
        truth[name] = record
        truth_path.write_text(json.dumps(truth, indent=1))
        print(f"{name:18s} quarter-epoch val {record['quarter_val']:.4f}  1-epoch test {record['epoch_test']:.4f} "
              f"({record['epoch_bytes']:,} B, {record['epoch_seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
