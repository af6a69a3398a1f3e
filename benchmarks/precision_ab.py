"""Does training in bf16 on a CPU with native bf16 keep the accuracy, and how much faster is it?

Two arms per seed, the same plan and the same fine-tune, differing only in ``--precision``:

* ``fp32``: the steps in fp32 (what ``auto`` does on a CPU);
* ``bf16``: the steps under bf16 autocast with channels-last tensors (weights, gradients and optimizer state
  stay fp32; evaluation stays fp32).

Each arm is ``autocompress search --mode projection`` (the projection plan, computed the same way in both) with
the final fine-tune given by ``--final-epochs`` and ``--common`` (distillation by default). Test accuracy is
read from each arm's ``best.yaml`` (the hardened model in ``best.acz``; the test split only reports). The two
arms of a seed run back to back, their order alternating between seeds, so the speed ratio is measured side by
side. A first section times single distilled fake-quantization steps of ResNet-20 and ResNet-56 in both
formats, in alternation.

The verdict: the bf16 arm's mean test accuracy is at most 0.15 points below the fp32 arm's, and its fine-tunes
are at least 1.5x faster (median ratio of the arms' wall times).

    python benchmarks/precision_ab.py --seeds 0,1,2 --final-epochs 2
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import add_ab_arguments, machine_line, run_arm, verdict

from autocompress.compress import attach_fake_quant_, compressible_layers
from autocompress.engine import native_bf16
from autocompress.engine._device import autocast_for
from autocompress.models import build_model
from autocompress.plan import Plan

REPO = Path(__file__).resolve().parents[1]
ARMS = ("fp32", "bf16")
ACCURACY_MARGIN_POINTS = 0.15
SPEED_BAR = 1.5


def step_times(model_name: str, rounds: int, batch_size: int = 128) -> dict[str, float]:
    """Median seconds of one distilled fake-quantization step (2 bits, 87 % sparsity) per format."""
    torch.manual_seed(0)
    teacher = build_model(model_name).eval()
    student = copy.deepcopy(teacher).train()
    plan = Plan.uniform(compressible_layers(student), sparsity=0.87, bits=2, quantizer="clipq", model=model_name)
    attach_fake_quant_(student, plan)
    images, labels = torch.rand(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    steps = {arm: _distilled_step(copy.deepcopy(student), copy.deepcopy(teacher), images, labels, bf16=arm == "bf16")
             for arm in ARMS}
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for round_index in range(rounds):
        for arm in ARMS if round_index % 2 == 0 else ARMS[::-1]:
            started = time.perf_counter()
            steps[arm]()
            times[arm].append(time.perf_counter() - started)
    return {arm: statistics.median(values) for arm, values in times.items()}


def _distilled_step(student: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    *, bf16: bool) -> Any:
    """One SGD step as ``engine.train`` takes it with distillation (T = 4, weight 0.9)."""
    cpu = torch.device("cpu")
    if bf16:
        student, teacher = student.to(memory_format=torch.channels_last), teacher.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(cpu, bf16):
            logits = student(images)
            with torch.no_grad():
                soft = teacher(images)
        logits, soft = logits.float(), soft.float()
        loss = 0.9 * 16 * F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(soft / 4, 1), reduction="batchmean")
        (loss + 0.1 * F.cross_entropy(logits, labels)).backward()
        optimizer.step()

    return step


def arm(args: argparse.Namespace, precision: str, seed: int, common: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) one arm; its test and validation accuracy, bytes and wall time."""
    _, result, minutes = run_arm(args, precision, seed, {**common, "mode": "projection", "precision": precision})
    return {"test": result["accuracy"]["test"], "val": result["accuracy"]["val"], "bytes": result["packed_bytes"],
            "minutes": minutes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ab_arguments(parser, output_root="precision_ab", common='{"distill": true}',
                     common_help="settings both arms share, as JSON")
    parser.add_argument("--step-rounds", type=int, default=8, help="timed steps per model and format (0: skip)")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    common = json.loads(args.common)
    cpu = torch.device("cpu")
    print(machine_line("precision_ab.py", f"{args.config.name}, native bf16 on this CPU: {native_bf16(cpu)}, "
                                          f"final fine-tune {args.final_epochs:g} epoch(s), both arms {common}"))
    if args.step_rounds:
        print("\none distilled fake-quantization step, batch 128 (median of alternating rounds)")
        for model_name in ("resnet20", "resnet56"):
            times = step_times(model_name, args.step_rounds)
            print(f"  {model_name}: fp32 {1000 * times['fp32']:.0f} ms, bf16 {1000 * times['bf16']:.0f} ms, "
                  f"ratio {times['fp32'] / times['bf16']:.2f}", flush=True)
    print()
    rows = []
    for index, seed in enumerate(seeds):
        order = ARMS if index % 2 == 0 else ARMS[::-1]
        results = {precision: arm(args, precision, seed, common) for precision in order}
        rows.append((seed, results))
        fp32, bf16 = results["fp32"], results["bf16"]
        print(f"seed {seed}: fp32 {fp32['test']:.2%} (val {fp32['val']:.2%}, {fp32['bytes']:,} B, {fp32['minutes']:.1f} min)  "
              f"bf16 {bf16['test']:.2%} (val {bf16['val']:.2%}, {bf16['bytes']:,} B, {bf16['minutes']:.1f} min)  "
              f"difference {100 * (bf16['test'] - fp32['test']):+.2f} points, speed {fp32['minutes'] / bf16['minutes']:.2f}x",
              flush=True)
    differences = [100 * (results["bf16"]["test"] - results["fp32"]["test"]) for _, results in rows]
    ratios = [results["fp32"]["minutes"] / results["bf16"]["minutes"] for _, results in rows]
    for precision in ARMS:
        tests = [results[precision]["test"] for _, results in rows]
        print(f"{precision}: mean {statistics.mean(tests):.2%}  spread (std) {100 * statistics.pstdev(tests):.2f} points")
    spread = f", sample std {statistics.stdev(differences):.2f}" if len(differences) > 1 else ""
    print(f"difference bf16 - fp32: mean {statistics.mean(differences):+.2f} points{spread}, "
          f"per seed {', '.join(f'{difference:+.2f}' for difference in differences)}")
    print(f"speed (fp32 minutes / bf16 minutes): median {statistics.median(ratios):.2f}x, "
          f"per seed {', '.join(f'{ratio:.2f}' for ratio in ratios)}")
    passed = statistics.mean(differences) >= -ACCURACY_MARGIN_POINTS and statistics.median(ratios) >= SPEED_BAR
    return verdict(passed, f"mean difference {statistics.mean(differences):+.2f} points (bar >= -{ACCURACY_MARGIN_POINTS}), "
                           f"median speed-up {statistics.median(ratios):.2f}x (bar >= {SPEED_BAR})")


if __name__ == "__main__":
    raise SystemExit(main())
