"""How fast is exact size accounting for a ResNet-18 plan, without writing the file?

A search sizes every proposal, and repairs one that does not fit by searching
along a path of plans on exact sizes, so the accounting runs several times per
trial. In packed format 2 a layer's bytes are those of its entropy-coded streams,
so sizing a layer quantizes and codes it; ``SizeAccountant`` remembers each
layer's size per (kept count, bits, quantizer). This script times, on ResNet-18
(random init: the bytes depend on the weights' values, not on how accurate they
are):

* ``SizeAccountant.estimate`` per plan (first time each plan is seen: nothing
  remembered from earlier plans), and the one-shot ``estimate_size`` on the
  same plans, interleaved plan by plan;
* ``fit_to_budget`` of a random proposal to 1 MB: size evaluations and time;

for two kinds of plans: those the ResNet-18 1 MB search works with (random
per-layer sparsity and bits fitted to 1,000,000 bytes) and random plans over the
whole space (sparsity 0..0.98, bits 2..6). Every accountant answer is checked
against ``estimate_size``, and, for a few plans, against the size of the file
``export_packed`` writes. The bar (issue 5) is <= 50 ms per plan (median).

    python benchmarks/size_speed.py            # 30 plans of each kind, 3 files
    python benchmarks/size_speed.py --quick    # 8 plans of each kind, 1 file

Exit code 1 if the median is over the bar or any size differs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import machine_line, verdict

from autocompress.allocation import SearchSpace, fit_to_budget
from autocompress.compress import compressible_layers
from autocompress.models import build_model
from autocompress.pack import SizeAccountant, estimate_size, export_packed
from autocompress.plan import LayerSetting, Plan

BAR_MS = 50.0
TARGET_BYTES = 1_000_000


class CountingAccountant(SizeAccountant):
    """Counts size evaluations (to report how many a fit to the budget needs)."""

    calls = 0

    def estimate(self, plan: Plan):
        self.calls += 1
        return super().estimate(plan)


def random_plan(space: SearchSpace, rng: random.Random) -> Plan:
    return Plan(
        layers={
            name: LayerSetting(rng.uniform(0, space.sparsity_max), rng.randint(space.bits_min, space.bits_max)) for name in space.layers
        },
        model="resnet18",
    )


def time_ms(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return 1000 * (time.perf_counter() - started), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plans", type=int, default=None, help="plans of each kind (default 30; quick 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    count = args.plans or (8 if args.quick else 30)
    files = 1 if args.quick else 3
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    space = SearchSpace(layers=tuple(compressible_layers(model)), sparsity_max=0.98, bits_min=2, bits_max=6)
    sizes = CountingAccountant(model, model_spec="resnet18")
    print(machine_line("size_speed"))
    n_parameters = sum(p.numel() for p in model.parameters())
    print(f"# ResNet-18 (random init, {n_parameters:,} parameters, {len(space.layers)} compressible layers)\n")
    rng = random.Random(args.seed)
    fit_ms, fit_calls, near_target, anywhere = [], [], [], [random_plan(space, rng) for _ in range(count)]
    for _ in range(count):
        proposal = random_plan(space, rng)
        sizes.calls = 0
        elapsed, fitted = time_ms(lambda proposal=proposal: fit_to_budget(sizes, proposal, space, TARGET_BYTES))
        fit_ms.append(elapsed)
        fit_calls.append(sizes.calls)
        near_target.append(fitted)
    # a fresh accountant for the timing: the fit above left these plans' counts in its memory
    sizes = SizeAccountant(model, model_spec="resnet18")
    mismatches = 0
    header = f"{'plans':<26} {'n':>3} {'accountant ms':>14} {'max':>7} {'estimate_size ms':>17} {'speed-up':>9} {'mean bytes':>12}"
    print(header)
    print("-" * len(header))
    medians = []
    for label, plans in (("fitted to 1 MB (search)", near_target), ("random over the space", anywhere)):
        fast, slow, totals = [], [], []
        for plan in plans:
            fast_ms, fast_report = time_ms(lambda plan=plan: sizes.estimate(plan))
            slow_ms, slow_report = time_ms(lambda plan=plan: estimate_size(model, plan, model_spec="resnet18"))
            mismatches += fast_report != slow_report
            fast.append(fast_ms)
            slow.append(slow_ms)
            totals.append(fast_report.total)
        medians.append(statistics.median(fast))
        print(
            f"{label:<26} {len(plans):>3} {statistics.median(fast):>14.1f} {max(fast):>7.1f} {statistics.median(slow):>17.1f} "
            f"{statistics.median(s / f for s, f in zip(slow, fast)):>8.1f}x {statistics.mean(totals):>12,.0f}"
        )
    print(
        f"\nfit_to_budget of a random proposal to {TARGET_BYTES:,} B: median {statistics.median(fit_calls):.0f} size evaluations "
        f"(max {max(fit_calls)}), median {statistics.median(fit_ms):.0f} ms (max {max(fit_ms):.0f} ms)"
    )
    with tempfile.TemporaryDirectory() as folder:
        for index, plan in enumerate(near_target[:files]):
            path = Path(folder) / f"{index}.acz"
            export_packed(model, plan, path, model_spec="resnet18", num_classes=10)
            estimate = sizes.estimate(plan).total
            on_disk = os.path.getsize(path)
            mismatches += estimate != on_disk
            print(f"  file {index}: accountant {estimate:,} B, written file {on_disk:,} B{'' if estimate == on_disk else '  DIFFERENT'}")
    worst = max(medians)
    return verdict(
        worst <= BAR_MS and mismatches == 0,
        f"median {worst:.1f} ms per ResNet-18 plan (bar <= {BAR_MS:g} ms); "
        f"{mismatches} size mismatches against estimate_size and written files",
    )


if __name__ == "__main__":
    sys.exit(main())
