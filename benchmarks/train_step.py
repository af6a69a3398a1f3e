"""How much does in-parallel pruning-quantization cost per training step?

A search trial fine-tunes with every compressed layer's mask and quantization
recomputed from the full-precision weights at each forward pass, and
straight-through gradients (``attach_fake_quant_``). This script times one such
step against one plain step of the same model, on the same batch, with the same
optimizer (SGD, Nesterov momentum, weight decay, as ``engine.train`` uses):

* two copies of the model, one plain and one with fake quantization attached;
* each round times one plain step and one fake-quant step back to back, the order
  alternating between rounds, so load from other processes hits both alike;
* the ratio reported is the median over rounds of (fake-quant time / plain time).

The bar (issue 5) is a ratio of at most 1.25. Plans: every compressible layer at
sparsity 0.8 and 4 bits (the regime of a 50 KB ResNet-20), once per quantizer,
plus sparsity 0 at 8 bits with clipq (no pruning: the mask costs the most relative
to what it removes).

    python benchmarks/train_step.py            # ResNet-20 and ResNet-56, batch 128, 30 rounds
    python benchmarks/train_step.py --quick    # ResNet-20 only, 12 rounds (about 1 min on 2 cores)
    python benchmarks/train_step.py --models resnet18 --rounds 6

The images are random tensors: a step's time does not depend on their content,
and the script then needs no data set. Exit code 1 if any ratio is over the bar.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from _common import machine_line, verdict
from torch import nn

from autocompress.compress import attach_fake_quant_, compressible_layers
from autocompress.engine import autocast_for, prepare_model, resolve_device
from autocompress.models import build_model
from autocompress.plan import Plan

RATIO_BAR = 1.25
PLANS = (("clipq", 0.8, 4), ("uniform", 0.8, 4), ("kmeans", 0.8, 4), ("clipq", 0.0, 8))


@dataclass(frozen=True)
class StepTiming:
    model: str
    plan: str
    plain_ms: float
    fake_quant_ms: float
    ratio: float

    @property
    def passed(self) -> bool:
        return self.ratio <= RATIO_BAR


def make_step(model: nn.Module, device: torch.device) -> callable:
    """One SGD step (forward, loss, backward, update) on a fixed batch, synchronised on CUDA."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4, nesterov=True)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def time_pair(
    model_name: str, quantizer: str, sparsity: float, bits: int, *, rounds: int, batch_size: int, device: torch.device
) -> StepTiming:
    torch.manual_seed(0)
    plain = prepare_model(build_model(model_name).train(), device)
    fake_quant = copy.deepcopy(plain)
    plan = Plan.uniform(compressible_layers(plain), sparsity=sparsity, bits=bits, quantizer=quantizer, model=model_name)
    attach_fake_quant_(fake_quant, plan)
    steps = {"plain": make_step(plain, device), "fake_quant": make_step(fake_quant, device)}
    images = torch.rand(batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    for step in steps.values():  # warm-up (allocator, k-means first fit)
        step(images, labels)
    times: dict[str, list[float]] = {"plain": [], "fake_quant": []}
    for round_index in range(rounds):
        order = ("plain", "fake_quant") if round_index % 2 == 0 else ("fake_quant", "plain")
        for name in order:
            started = time.perf_counter()
            steps[name](images, labels)
            times[name].append(time.perf_counter() - started)
    ratios = [fq / p for fq, p in zip(times["fake_quant"], times["plain"])]
    return StepTiming(
        model=model_name,
        plan=f"{quantizer} s={sparsity:g} b={bits}",
        plain_ms=1000 * statistics.median(times["plain"]),
        fake_quant_ms=1000 * statistics.median(times["fake_quant"]),
        ratio=statistics.median(ratios),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-20 only, 12 rounds")
    parser.add_argument("--models", default=None, help="comma-separated (default resnet20,resnet56; quick: resnet20)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per plan (default 30; quick 12)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    models = (args.models or ("resnet20" if args.quick else "resnet20,resnet56")).split(",")
    rounds = args.rounds or (12 if args.quick else 30)
    print(machine_line("train_step", f"device {device}"))
    print(f"# batch {args.batch_size}, {rounds} rounds per plan; ratio = median over rounds of fake-quant / plain step time\n")
    header = f"{'model':<9} {'plan':<20} {'plain ms':>9} {'fake-quant ms':>14} {'ratio':>6}  bar <= {RATIO_BAR}"
    print(header)
    print("-" * len(header))
    results = []
    for model_name in models:
        for quantizer, sparsity, bits in PLANS:
            result = time_pair(model_name, quantizer, sparsity, bits, rounds=rounds, batch_size=args.batch_size, device=device)
            results.append(result)
            print(
                f"{result.model:<9} {result.plan:<20} {result.plain_ms:>9.1f} {result.fake_quant_ms:>14.1f} "
                f"{result.ratio:>6.3f}  {'ok' if result.passed else 'OVER'}",
                flush=True,
            )
    worst = max(result.ratio for result in results)
    return verdict(all(result.passed for result in results), f"worst fake-quant/plain step ratio {worst:.3f} (bar <= {RATIO_BAR})")


if __name__ == "__main__":
    sys.exit(main())
