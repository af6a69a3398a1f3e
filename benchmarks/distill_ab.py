"""Does distilling from the uncompressed model help the final fine-tune of a compressed plan?

One plan (a ``best.yaml`` written by a search), one pretrained baseline, the same fine-tuning
budget, seed and learning rate: the plain fine-tune (cross-entropy on the labels) against the
same fine-tune with ``--distill`` (the loss mixes in the baseline's soft outputs at temperature
T). Both arms are hardened, their packed sizes checked and their test accuracy measured on the
10,000 CIFAR-10 test images. Arms run one after the other in one process, so the wall-time
ratio shows what the teacher's forward pass costs on this machine.

    python benchmarks/distill_ab.py --plan benchmarks/results/resnet20-50KB-main/best.yaml \\
        --checkpoint ../shared/weights/akamaster/resnet20-12fca82f.th --epochs 1
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

from _common import machine_line, verdict

from autocompress.data import prepare_splits
from autocompress.engine import Distillation, resolve_device
from autocompress.models import build_model, load_checkpoint
from autocompress.pipeline import finetune_under_plan_, harden_and_measure
from autocompress.plan import Plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, required=True, help="best.yaml (or any plan YAML naming its model)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--weight", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    plan = Plan.load(args.plan)
    device = resolve_device(args.device)
    splits = prepare_splits("cifar10", args.data_dir, val_size=5000, split_seed=0, download=False)
    baseline = build_model(plan.model, num_classes=splits.num_classes)
    load_checkpoint(baseline, args.checkpoint)
    baseline.to(device).eval()
    print(machine_line("distill_ab", f"device {device}"))
    print(f"# plan {args.plan} ({plan.model}, target {plan.target_bytes} B), {args.epochs:g} epoch(s) at lr {args.lr:g}, "
          f"seed {args.seed}; distill T={args.temperature:g}, weight {args.weight:g}")
    results: dict[str, tuple[float, float, int, float]] = {}
    for arm in ("plain", "distill"):
        distillation = Distillation(baseline, temperature=args.temperature, weight=args.weight) if arm == "distill" else None
        model = copy.deepcopy(baseline)
        started = time.perf_counter()
        finetune_under_plan_(model, plan, splits.train, device=device, epochs=args.epochs, lr=args.lr, seed=args.seed,
                             distillation=distillation)
        seconds = time.perf_counter() - started
        compressed = harden_and_measure(model, plan, model_spec=plan.model, num_classes=splits.num_classes, device=device,
                                        splits=splits, measure_test=True)
        results[arm] = (float(compressed.val_accuracy), float(compressed.test_accuracy), compressed.size.total, seconds)
        print(f"{arm:8s} val {results[arm][0]:.2%}  test {results[arm][1]:.2%}  packed {results[arm][2]:,} B  "
              f"fine-tune {seconds / 60:.1f} min", flush=True)
    gain = results["distill"][1] - results["plain"][1]
    print(f"# distill - plain: {gain * 100:+.2f} test points; time ratio distill/plain {results['distill'][3] / results['plain'][3]:.2f}")
    # the packed size depends a little on the trained weights (codebooks, index runs): both must fit the target
    both_fit = plan.target_bytes is None or all(result[2] <= plan.target_bytes for result in results.values())
    return verdict(both_fit and gain > 0, f"distillation {'helps' if gain > 0 else 'does not help'} this plan by {gain * 100:+.2f} "
                                          f"test points; both packed files {'fit' if both_fit else 'do not all fit'} the target")


if __name__ == "__main__":
    sys.exit(main())
