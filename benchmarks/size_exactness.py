"""Is ``estimate_size(...).total`` exactly the size of the exported ``.acz`` file?

For random per-layer plans on ResNet-20 (pretrained akamaster weights) and
ResNet-18 (random initialisation: no pretrained CIFAR ResNet-18 is shipped, and
the byte count depends only on the weights' magnitudes and positions, not on
their accuracy), with every quantizer, compare the estimate (no file written)
with ``os.path.getsize`` of the file ``export_packed`` writes. Each file is read
back with ``read_packed`` and the plan it holds is checked against the plan.

Then the "under 1,000,000 bytes" case: a ResNet-18 plan (uniform sparsity,
4-bit clipq) whose estimate is just under 1,000,000 bytes, exported.

    python benchmarks/size_exactness.py            # 20 plans x 3 quantizers x 2 models
    python benchmarks/size_exactness.py --quick    # 5 plans

Exit code 1 if any estimate differs from its file's size (or an export fails).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from autocompress.compress import compressible_layers, kept_count
from autocompress.models import build_model, load_checkpoint
from autocompress.pack import estimate_size, export_packed, read_packed
from autocompress.plan import QUANTIZERS, LayerSetting, Plan

REPO_ROOT = Path(__file__).resolve().parents[1]
ONE_MB = 1_000_000


@dataclass
class Case:
    model: str
    quantizer: str
    plan_index: int
    n_layers: int
    estimate: int | None = None
    file_size: int | None = None
    estimate_s: float = 0.0
    export_s: float = 0.0
    plan_read_back: bool = False
    error: str | None = None

    @property
    def exact(self) -> bool:
        return self.error is None and self.estimate == self.file_size


@dataclass
class Group:
    cases: list[Case] = field(default_factory=list)


def random_plan_layers(rng: random.Random, names: list[str]) -> list[tuple[str, float, int]]:
    """A random subset of layers (all of them in about a quarter of the plans), each with its own
    sparsity in [0, 0.99) (exactly 0 now and then: the dense encoding) and bits in 1..8."""
    if rng.random() < 0.25:
        chosen = list(names)
    else:
        keep_probability = rng.uniform(0.15, 0.9)
        chosen = [name for name in names if rng.random() < keep_probability] or [rng.choice(names)]
    layers = []
    for name in chosen:
        sparsity = 0.0 if rng.random() < 0.1 else rng.uniform(0.0, 0.99)
        layers.append((name, sparsity, rng.randint(1, 8)))
    return layers


def plan_for(layers: list[tuple[str, float, int]], quantizer: str, model_spec: str) -> Plan:
    return Plan(
        layers={name: LayerSetting(sparsity=sparsity, bits=bits, quantizer=quantizer) for name, sparsity, bits in layers},
        model=model_spec,
    )


def read_back_matches(path: Path, plan: Plan, numels: dict[str, int]) -> bool:
    """The file's recovered plan names the same layers with the same bits, quantizer and kept count."""
    recovered = read_packed(path).plan
    if set(recovered.layers) != set(plan.layers):
        return False
    for name, setting in plan.layers.items():
        got = recovered.layers[name]
        n_kept = kept_count(numels[name], setting.sparsity)
        got_kept = numels[name] - round(got.sparsity * numels[name])
        if got.bits != setting.bits or got.quantizer != setting.quantizer or got_kept != n_kept:
            return False
    return True


def run_case(model, model_spec: str, plan: Plan, path: Path, case: Case, numels: dict[str, int], read_back: bool) -> None:
    try:
        started = time.perf_counter()
        case.estimate = estimate_size(model, plan, model_spec=model_spec).total
        case.estimate_s = time.perf_counter() - started
        started = time.perf_counter()
        export_packed(model, plan, path, model_spec=model_spec, num_classes=10)
        case.export_s = time.perf_counter() - started
        case.file_size = os.path.getsize(path)
        case.plan_read_back = read_back_matches(path, plan, numels) if read_back else True
        if not case.plan_read_back:
            case.error = "plan read back from the file differs"
    except Exception as error:
        case.error = f"{type(error).__name__}: {error}"
        traceback.print_exc(file=sys.stderr)
    finally:
        path.unlink(missing_ok=True)


def load_models(weights_dir: Path) -> dict[str, torch.nn.Module]:
    resnet20 = build_model("resnet20", num_classes=10)
    load_checkpoint(resnet20, weights_dir / "resnet20-12fca82f.th")
    torch.manual_seed(0)
    resnet18 = build_model("resnet18", num_classes=10)  # random init (seed 0)
    return {"resnet20": resnet20.eval(), "resnet18": resnet18.eval()}


def print_table(cases: list[Case]) -> None:
    head = (
        f"{'model':<9} {'quantizer':<9} {'plans':>5} {'exact':>7} {'mean file B':>12} {'min file B':>11} "
        f"{'max file B':>11} {'estimate ms':>11} {'export ms':>10} {'read-back ok':>12}"
    )
    print(head)
    print("-" * len(head))
    for model_spec in dict.fromkeys(case.model for case in cases):
        for quantizer in QUANTIZERS:
            group = [c for c in cases if c.model == model_spec and c.quantizer == quantizer]
            if not group:
                continue
            sizes = [c.file_size for c in group if c.file_size is not None] or [0]
            exact = sum(c.exact for c in group)
            print(
                f"{model_spec:<9} {quantizer:<9} {len(group):>5} {f'{exact}/{len(group)}':>7} "
                f"{statistics.mean(sizes):>12,.0f} {min(sizes):>11,} {max(sizes):>11,} "
                f"{1000 * statistics.mean(c.estimate_s for c in group):>11.1f} "
                f"{1000 * statistics.mean(c.export_s for c in group):>10.1f} "
                f"{f'{sum(c.plan_read_back for c in group)}/{len(group)}':>12}"
            )
    print("-" * len(head))
    exact = sum(c.exact for c in cases)
    print(f"{'all':<9} {'':<9} {len(cases):>5} {f'{exact}/{len(cases)}':>7}")


def plan_under_one_mb(model, model_spec: str, names: list[str], iterations: int) -> tuple[float, int]:
    """Bisect a uniform sparsity (4-bit clipq) so that the estimate is the largest found below 1,000,000 bytes."""
    low, high = 0.85, 0.97  # estimate(low) > 1 MB > estimate(high) for ResNet-18
    best: tuple[float, int] | None = None
    for _ in range(iterations):
        middle = (low + high) / 2
        total = estimate_size(
            model, Plan.uniform(names, sparsity=middle, bits=4, quantizer="clipq", model=model_spec), model_spec=model_spec
        ).total
        if total < ONE_MB:
            best = (middle, total)
            high = middle
        else:
            low = middle
    if best is None:
        raise RuntimeError("no sparsity in [0.85, 0.97] gives an estimate under 1,000,000 bytes")
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 random plans per model and quantizer instead of 20")
    parser.add_argument("--plans", type=int, help="random plans per model and quantizer (default 20, 5 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random plans")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "../shared/data",
                        help="CIFAR-10 folder (not needed here; accepted for symmetry)")
    parser.add_argument("--weights-dir", type=Path, default=REPO_ROOT / "../shared/weights/akamaster",
                        help="folder with resnet20-12fca82f.th")
    args = parser.parse_args(argv)
    n_plans = args.plans or (5 if args.quick else 20)
    read_back = True

    print(f"# size_exactness  {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}  {platform.machine()} {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"# {n_plans} random plans x {len(QUANTIZERS)} quantizers x 2 models (seed {args.seed}); "
          "resnet20: pretrained akamaster weights; resnet18: random init (torch seed 0)\n")
    models = load_models(args.weights_dir)
    rng = random.Random(args.seed)
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="acz-bench-") as folder:
        path = Path(folder) / "plan.acz"
        for model_spec, model in models.items():
            names = list(compressible_layers(model))
            numels = {name: module.weight.numel() for name, module in compressible_layers(model).items()}
            started = time.perf_counter()
            for index in range(n_plans):
                layers = random_plan_layers(rng, names)
                for quantizer in QUANTIZERS:
                    case = Case(model_spec, quantizer, index, len(layers))
                    run_case(model, model_spec, plan_for(layers, quantizer, model_spec), path, case, numels, read_back)
                    cases.append(case)
                    if not case.exact:
                        print(f"  MISMATCH {model_spec} plan {index} {quantizer}: estimate {case.estimate} "
                              f"file {case.file_size} {case.error or ''}")
            print(f"  {model_spec}: {n_plans * len(QUANTIZERS)} plans done in {time.perf_counter() - started:.0f} s "
                  f"({len(names)} compressible layers)", flush=True)
        print()
        print_table(cases)

        print("\n## ResNet-18 (random init) under 1,000,000 bytes: uniform sparsity, 4-bit clipq, every layer")
        model = models["resnet18"]
        names = list(compressible_layers(model))
        sparsity, estimate = plan_under_one_mb(model, "resnet18", names, iterations=10 if args.quick else 16)
        plan = Plan.uniform(names, sparsity=sparsity, bits=4, quantizer="clipq", model="resnet18")
        one_mb_path = Path(folder) / "resnet18-under-1MB.acz"
        _, report = export_packed(model, plan, one_mb_path, model_spec="resnet18", num_classes=10)
        file_size = os.path.getsize(one_mb_path)
        print(f"  sparsity {sparsity:.6f}: estimate {estimate:,} B, exported file {file_size:,} B "
              f"({report.ratio_to_fp32:.2%} of fp32 {report.fp32_bytes:,} B); "
              f"{'file under 1,000,000 B' if file_size < ONE_MB else 'FILE NOT UNDER 1,000,000 B'}, "
              f"{'equal' if file_size == estimate else 'DIFFERENT'}")
        one_mb_ok = file_size < ONE_MB and file_size == estimate

    exact = sum(c.exact for c in cases)
    ok = exact == len(cases) and one_mb_ok
    print(f"\nVERDICT: {'PASS' if ok else 'FAIL'}: {exact}/{len(cases)} estimates equal the exported file size byte for byte; "
          f"ResNet-18 under-1MB plan: estimate {estimate:,} B, file {file_size:,} B")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
