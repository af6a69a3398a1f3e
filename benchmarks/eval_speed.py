"""Does a compressed model evaluate as fast as the dense one, and does the packed file give the same predictions?

A compressed model holds ordinary dense weights (pruned positions are zeros,
batch norms folded into an fp16 affine), so it runs the same kernels as the
dense model: its throughput should be the dense one's (ratio 1.0; the bar is
>= 0.9). For each model (ResNet-20 pretrained; also ResNet-56 in full mode)
under the plan "every layer: sparsity 0.5, 4 bits, clipq" (no fine-tuning):

* images/s of ``predict`` (the library's evaluation path, batch 1000, CPU) on the
  same test images for three models: dense, hardened in memory
  (``harden_and_measure``) and loaded back from the packed file
  (``read_packed``). The measurements are interleaved at batch granularity: each
  batch of 1000 images goes through the three models back to back (order
  rotated from batch to batch), so load from other processes hits all three
  alike; the ratio reported is the median over batches of dense time /
  compressed time;
* predictions of the packed-file model vs the in-memory hardened model on all
  10,000 test images (must differ on 0 images) and the largest logit difference;
* test accuracy of dense vs compressed (hardened as is, and, in full mode,
  after the BN recalibration that ``autocompress apply --finetune-epochs 0`` does).

    python benchmarks/eval_speed.py            # 10,000 images, ResNet-20 and ResNet-56
    python benchmarks/eval_speed.py --quick    # 2,000 images for timing, ResNet-20 only

Exit code 1 if a ratio is under 0.9 or any prediction differs.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from autocompress.compress import compressible_layers
from autocompress.data import prepare_splits
from autocompress.engine import predict, resolve_device
from autocompress.models import build_model, load_checkpoint
from autocompress.pack import read_packed
from autocompress.pipeline import finetune_under_plan_, harden_and_measure
from autocompress.plan import Plan

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
RATIO_BAR = 0.9
VARIANTS = ("dense", "hardened", "packed")


@dataclass
class SpeedResult:
    model: str
    n_images: int  # images per pass
    rounds: int
    batch_images: list[int]  # images in each timed batch, in timing order (same for every variant)
    times: dict[str, list[float]]  # seconds per timed batch, per variant, in timing order

    def rate(self, variant: str) -> float:
        """Images/s over all timed batches of ``variant``."""
        return sum(self.batch_images) / sum(self.times[variant])

    def median_rate(self, variant: str) -> float:
        """Median over the timed batches of images/s."""
        return statistics.median(n / t for n, t in zip(self.batch_images, self.times[variant]))

    def paired_ratios(self, variant: str) -> list[float]:
        """Per batch: dense time / variant time, the two timed back to back on the same images."""
        return [d / v for d, v in zip(self.times["dense"], self.times[variant])]

    def ratio(self, variant: str) -> float:
        """Median of the paired ratios: throughput of ``variant`` relative to the dense model."""
        return statistics.median(self.paired_ratios(variant))


def timed_predict(model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    labels = predict(model, images, device=device, batch_size=batch_size)
    return time.perf_counter() - started, labels


def measure_speed(models: dict[str, torch.nn.Module], images: torch.Tensor, device: torch.device, rounds: int, batch_size: int,
                  model_spec: str) -> tuple[SpeedResult, dict[str, torch.Tensor]]:
    """Interleave at batch granularity: each batch of ``batch_size`` images goes through the three models
    back to back (order rotated from batch to batch), so that load from other processes hits them alike.
    Returns the timings and each model's predictions for ``images`` (from the first round)."""
    for model in models.values():  # warm-up (allocator, oneDNN primitives)
        timed_predict(model, images[:batch_size], device, batch_size)
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    predictions: dict[str, list[torch.Tensor]] = {variant: [] for variant in VARIANTS}
    batch_images: list[int] = []
    step = 0
    for round_index in range(rounds):
        started = time.perf_counter()
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            order = VARIANTS[step % 3 :] + VARIANTS[: step % 3]
            step += 1
            batch_images.append(len(batch))
            for variant in order:
                seconds, labels = timed_predict(models[variant], batch, device, batch_size)
                times[variant].append(seconds)
                if round_index == 0:
                    predictions[variant].append(labels)
        print(f"    round {round_index + 1}/{rounds} ({time.perf_counter() - started:.0f} s): "
              + ", ".join(f"{v} {len(images) / sum(times[v][-len(range(0, len(images), batch_size)):]):,.0f} img/s"
                          for v in VARIANTS), flush=True)
    result = SpeedResult(model_spec, len(images), rounds, batch_images, times)
    return result, {variant: torch.cat(parts) for variant, parts in predictions.items()}


def max_logit_difference(a: torch.nn.Module, b: torch.nn.Module, images: torch.Tensor) -> float:
    with torch.inference_mode():
        pixels = images.float().div(255.0)
        return float((a.eval()(pixels) - b.eval()(pixels)).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 images for timing, ResNet-20 only, 3 passes, no BN-recalibration row")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "../shared/data", help="folder holding cifar-10-batches-py")
    parser.add_argument("--weights-dir", type=Path, default=REPO_ROOT / "../shared/weights/akamaster",
                        help="folder with the akamaster .th files")
    parser.add_argument("--rounds", type=int, help="passes over the timing images (default: resnet20 2, resnet56 1; 3 with --quick)")
    parser.add_argument("--batch-size", type=int, default=1000, help="predict() batch size (its default)")
    parser.add_argument("--device", default="cpu", help="cpu (default) | auto | cuda")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    model_specs = ["resnet20"] if args.quick else ["resnet20", "resnet56"]
    rounds = {spec: args.rounds or (3 if args.quick else (2 if spec == "resnet20" else 1)) for spec in model_specs}
    n_timing = 2000 if args.quick else 10_000

    print(f"# eval_speed  {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}  {platform.machine()} {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}")
    print(f"# plan: every compressible layer sparsity 0.5, 4 bits, clipq (no fine-tuning); timing on {n_timing:,} test images, "
          f"rounds {', '.join(f'{k} {v}' for k, v in rounds.items())};\n# each batch of {args.batch_size} images is timed through "
          "dense, hardened and packed back to back (order rotated per batch)\n")
    splits = prepare_splits("cifar10", args.data_dir, val_size=5000, split_seed=0)
    test = splits.test
    speed_results: list[SpeedResult] = []
    summary_rows: list[str] = []
    total_differing = 0
    with tempfile.TemporaryDirectory(prefix="acz-bench-") as folder:
        for model_spec in model_specs:
            print(f"## {model_spec}")
            dense = build_model(model_spec, num_classes=10)
            load_checkpoint(dense, args.weights_dir / WEIGHTS[model_spec])
            dense.eval()
            plan = Plan.uniform(compressible_layers(dense), sparsity=0.5, bits=4, quantizer="clipq", model=model_spec)
            compressed = harden_and_measure(dense, plan, model_spec=model_spec, num_classes=10, device=device)
            path = Path(folder) / f"{model_spec}.acz"
            compressed.write(path)
            packed = read_packed(path)
            file_size = os.path.getsize(path)
            print(f"  packed file {file_size:,} B = {file_size / compressed.size.fp32_bytes:.2%} of fp32 {compressed.size.fp32_bytes:,} B "
                  f"(estimate {compressed.size.total:,} B)")
            variants = {"dense": dense, "hardened": compressed.model, "packed": packed.model}

            speed, predictions = measure_speed(variants, test.images[:n_timing], device, rounds[model_spec], args.batch_size, model_spec)
            speed_results.append(speed)

            labels = test.labels
            if n_timing < len(test):  # --quick: the timed images were a subset; predict all test images
                predictions = {variant: predict(model, test.images, device=device, batch_size=args.batch_size)
                               for variant, model in variants.items()}
            differing = int((predictions["packed"] != predictions["hardened"]).sum())
            total_differing += differing
            logit_gap = max_logit_difference(packed.model, compressed.model, test.images[:1000])
            accuracy = {variant: float((p == labels).float().mean()) for variant, p in predictions.items()}

            recalibrated_accuracy = float("nan")
            if not args.quick:  # what `autocompress apply --finetune-epochs 0` does before hardening
                recalibrated = copy.deepcopy(dense)
                finetune_under_plan_(recalibrated, plan, splits.train, device=device, epochs=0, seed=0, progress=False)
                recalibrated_model = harden_and_measure(recalibrated, plan, model_spec=model_spec, num_classes=10, device=device).model
                recalibrated_accuracy = float((predict(recalibrated_model, test.images, device=device) == labels).float().mean())

            print(f"  packed vs hardened on {len(test):,} test images: {differing} differing predictions, "
                  f"max |logit difference| {logit_gap:.3g} (first 1,000 images)")
            print(f"  test top-1: dense {accuracy['dense']:.2%}, compressed (hardened) {accuracy['hardened']:.2%}, "
                  f"packed file {accuracy['packed']:.2%}, compressed after BN recalibration "
                  f"{'(skipped with --quick)' if args.quick else f'{recalibrated_accuracy:.2%}'}\n")
            summary_rows.append(
                f"{model_spec:<9} {file_size:>11,} {file_size / compressed.size.fp32_bytes:>7.2%} {accuracy['dense']:>8.2%} "
                f"{accuracy['hardened']:>10.2%} {accuracy['packed']:>8.2%} "
                f"{'-' if args.quick else f'{recalibrated_accuracy:.2%}':>10} {differing:>9}"
            )

    print("## Throughput (images/s over all timed batches; ratio = median over batches of dense time / compressed time)")
    head = (f"{'model':<9} {'batches':>7} {'dense':>7} {'hardened':>9} {'packed':>7} {'hardened/dense':>15} {'packed/dense':>13} "
            f"{'hardened/dense min..max':>24} {'packed/dense min..max':>22}")
    print(head)
    print("-" * len(head))
    ratios: list[float] = []
    for speed in speed_results:
        hardened_pairs, packed_pairs = speed.paired_ratios("hardened"), speed.paired_ratios("packed")
        ratios += [speed.ratio("hardened"), speed.ratio("packed")]
        print(f"{speed.model:<9} {len(speed.batch_images):>7} {speed.rate('dense'):>7,.0f} {speed.rate('hardened'):>9,.0f} "
              f"{speed.rate('packed'):>7,.0f} {speed.ratio('hardened'):>15.3f} {speed.ratio('packed'):>13.3f} "
              f"{f'{min(hardened_pairs):.3f}..{max(hardened_pairs):.3f}':>24} {f'{min(packed_pairs):.3f}..{max(packed_pairs):.3f}':>22}")
    print("\n## Accuracy on the 10,000 test images (plan: sparsity 0.5, 4-bit clipq, every layer, no fine-tuning)")
    head = (f"{'model':<9} {'packed B':>11} {'of fp32':>7} {'dense':>8} "
            f"{'compressed':>10} {'packed':>8} {'+BN recal':>10} {'differing':>9}")
    print(head)
    print("-" * len(head))
    print("\n".join(summary_rows))

    ok = min(ratios) >= RATIO_BAR and total_differing == 0
    print(f"\nVERDICT: {'PASS' if ok else 'FAIL'}: compressed/dense throughput ratio {min(ratios):.3f}..{max(ratios):.3f} "
          f"(bar >= {RATIO_BAR}); packed-file vs in-memory predictions differ on {total_differing} of "
          f"{len(test):,} test images per model")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
