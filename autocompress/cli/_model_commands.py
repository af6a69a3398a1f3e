"""Commands on one model, one plan or one packed file: train, evaluate, size, inspect, export, apply."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from torch import nn

from autocompress.cli._flags import Command, output_file, typed
from autocompress.compress import compressible_layers
from autocompress.data import prepare_splits
from autocompress.engine import evaluate, resolve_device, train
from autocompress.errors import AutocompressError, PlanError
from autocompress.models import build_model, load_checkpoint, save_checkpoint
from autocompress.pack import estimate_size, export_packed, inspect_packed, read_packed
from autocompress.pipeline import finetune_under_plan_, harden_and_measure
from autocompress.plan import Plan
from autocompress.settings.options import integer, number
from autocompress.units import format_size, parse_size


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, help="plan YAML (format autocompress/plan)")
    parser.add_argument("--target-size", help="byte budget (50KB, 1MB, 512KiB, 50000); overrides the plan's target_bytes")


def _load_model(spec: str | None, checkpoint: Path | str | None, num_classes: int, *, required_checkpoint: bool = True) -> nn.Module:
    if spec is None:
        raise AutocompressError("no model given: pass --model (e.g. --model resnet20) or use a plan that names its model")
    model = build_model(spec, num_classes=num_classes)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    elif required_checkpoint:
        raise AutocompressError(f"--checkpoint is required: the weights of {spec} to compress")
    return model


def _num_classes(dataset: str) -> int:
    return 100 if dataset == "cifar100" else 10


def _plan_and_model(args: argparse.Namespace) -> tuple[Plan, nn.Module, str]:
    plan = Plan.load(args.plan)
    if args.target_size is not None:
        plan.target_bytes = parse_size(args.target_size)
    if args.model and plan.model and args.model != plan.model:
        raise PlanError(f"{args.plan}: model: the plan is for {plan.model!r} but --model is {args.model!r}")
    spec = plan.model or args.model
    model = _load_model(spec, args.checkpoint, _num_classes(getattr(args, "dataset", "cifar10")))
    plan.check_layers(compressible_layers(model), source=str(args.plan))
    plan.model = spec
    return plan, model, spec


def _refuse_over_target(plan: Plan, n_bytes: int) -> None:
    if plan.target_bytes is not None and n_bytes > plan.target_bytes:
        raise PlanError(f"the packed model would be {format_size(n_bytes)}, over the plan's target_bytes "
                        f"{format_size(plan.target_bytes)}; raise sparsity or lower bits, or remove target_bytes; nothing was written")


class TrainCommand(Command):
    name = "train"
    help = "train a baseline model (resumable) and save its checkpoint"
    groups = ("model", "data", "device", "training")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--epochs", type=typed(number, above=0), default=30.0, help="training epochs (default: 30)")
        parser.add_argument("--lr", type=typed(number, above=0), default=0.1, help="peak learning rate (default: 0.1)")
        parser.add_argument("--batch-size", type=typed(integer, minimum=1), default=128, help="(default: 128)")
        parser.add_argument("--weight-decay", type=typed(number, minimum=0), default=5e-4, help="(default: 0.0005)")
        parser.add_argument("--out", type=output_file, help="checkpoint to write (default checkpoints/MODEL-DATASET-sSEED.pt)")

    def take_action(self, args: argparse.Namespace) -> int:
        spec = args.model or "resnet18"
        device = resolve_device(args.device)
        splits = prepare_splits(args.dataset, args.data_dir, val_size=args.val_size, split_seed=args.split_seed)
        model = _load_model(spec, args.checkpoint, splits.num_classes, required_checkpoint=False)
        out = args.out or Path("checkpoints") / f"{spec.replace(':', '_')}-{args.dataset}-s{args.seed}.pt"
        state_path = out.with_name(out.name + ".state")
        print(f"training {spec} on {args.dataset} for {args.epochs:g} epochs on {device}; resumable state in {state_path}")
        result = train(model, splits.train, device=device, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                       weight_decay=args.weight_decay, seed=args.seed, val_set=splits.val, checkpoint_path=state_path,
                       precision=args.precision)
        test_accuracy = evaluate(model, splits.test, device=device)
        save_checkpoint(out, model, model_spec=spec, dataset=args.dataset, seed=args.seed, val_accuracy=result.val_accuracy,
                        test_accuracy=test_accuracy, epochs=args.epochs)
        print(f"saved {out}: val top-1 {result.val_accuracy:.2%}, test top-1 {test_accuracy:.2%}")
        return 0


class EvaluateCommand(Command):
    name = "evaluate"
    help = "top-1 accuracy on the validation and test splits (of a checkpoint or a packed file)"
    groups = ("model", "data", "device")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--packed", type=Path, help="a packed .acz file (instead of --model/--checkpoint)")

    def take_action(self, args: argparse.Namespace) -> int:
        device = resolve_device(args.device)
        if args.packed is not None:
            packed = read_packed(args.packed)
            model, label = packed.model, f"{args.packed} ({packed.model_spec}, {packed.n_bytes:,} bytes)"
            num_classes = packed.num_classes
        else:
            model = _load_model(args.model, args.checkpoint, _num_classes(args.dataset))
            label, num_classes = f"{args.model} from {args.checkpoint}", _num_classes(args.dataset)
        if num_classes != _num_classes(args.dataset):
            raise AutocompressError(f"the model has {num_classes} classes but --dataset {args.dataset} has {_num_classes(args.dataset)}")
        splits = prepare_splits(args.dataset, args.data_dir, val_size=args.val_size, split_seed=args.split_seed)
        started = time.perf_counter()
        val = evaluate(model, splits.val, device=device, progress=True)
        test = evaluate(model, splits.test, device=device, progress=True)
        print(f"{label}\n  val  top-1 {val:.2%} ({len(splits.val):,} images)\n  test top-1 {test:.2%} ({len(splits.test):,} images)"
              f"\n  ({time.perf_counter() - started:.1f} s on {device})")
        return 0


class SizeCommand(Command):
    name = "size"
    help = "exact packed size of a plan, per layer (values, index, codebook, other)"
    groups = ("model",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _plan_arguments(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        plan, model, spec = _plan_and_model(args)
        report = estimate_size(model, plan, model_spec=spec)
        print(report.table())
        if plan.target_bytes is not None:
            verdict = "fits" if report.total <= plan.target_bytes else "DOES NOT FIT"
            print(f"target {format_size(plan.target_bytes)}: {verdict}")
        return 0


class InspectCommand(Command):
    name = "inspect"
    help = ("what a packed .acz file holds, per layer: weights, sparsity, bits, levels used, bytes of index, codes "
            "and table beside their entropy bounds; the format version and the model it decodes to")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", type=Path, help="a packed .acz file")
        parser.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of the table")

    def take_action(self, args: argparse.Namespace) -> int:
        contents = inspect_packed(args.file)
        print(json.dumps(contents.to_dict(), indent=2) if args.json else contents.table())
        return 0


class ExportCommand(Command):
    name = "export"
    help = "write the packed .acz file of a checkpoint under a plan (no training)"
    groups = ("model",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _plan_arguments(parser)
        parser.add_argument("--out", type=output_file, required=True, help="packed file to write (.acz)")
        parser.add_argument("--num-classes", type=typed(integer, minimum=1), default=10, help="(default: 10)")

    def take_action(self, args: argparse.Namespace) -> int:
        plan, model, spec = _plan_and_model(args)
        _refuse_over_target(plan, estimate_size(model, plan, model_spec=spec).total)
        _, report = export_packed(model, plan, args.out, model_spec=spec, num_classes=args.num_classes)
        print(f"wrote {args.out}: {format_size(report.total)}, {report.ratio_to_fp32:.2%} of fp32")
        return 0


class ApplyCommand(Command):
    name = "apply"
    help = "compress a checkpoint under a plan: optional fine-tune, BN recalibration, packed file, accuracy"
    groups = ("model", "data", "device", "training")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _plan_arguments(parser)
        parser.add_argument("--finetune-epochs", type=typed(number, minimum=0), default=0.0,
                            help="in-parallel pruning-quantization epochs, fractions allowed (default: 0)")
        parser.add_argument("--lr", type=typed(number, above=0), default=0.01, help="(default: 0.01)")
        parser.add_argument("--batch-size", type=typed(integer, minimum=1), default=128, help="(default: 128)")
        parser.add_argument("--out", type=output_file, help="packed file to write (default: the plan's name with .acz)")

    def take_action(self, args: argparse.Namespace) -> int:
        plan, model, spec = _plan_and_model(args)
        device = resolve_device(args.device)
        splits = prepare_splits(args.dataset, args.data_dir, val_size=args.val_size, split_seed=args.split_seed)
        out = args.out or args.plan.with_suffix(".acz")
        finetune_under_plan_(model, plan, splits.train, device=device, epochs=args.finetune_epochs, lr=args.lr,
                             batch_size=args.batch_size, seed=args.seed, precision=args.precision)
        compressed = harden_and_measure(model, plan, model_spec=spec, num_classes=splits.num_classes, device=device,
                                        splits=splits, measure_test=True)
        _refuse_over_target(plan, compressed.size.total)
        compressed.write(out)
        weights_path = out.with_suffix(".pt")
        save_checkpoint(weights_path, model, model_spec=spec, plan=str(args.plan))
        plan.result = {"packed_bytes": compressed.size.total,
                       "accuracy": {"val": round(compressed.val_accuracy or 0.0, 4), "test": round(compressed.test_accuracy or 0.0, 4)}}
        result_path = out.with_name(out.stem + ".plan.yaml")  # never the input plan: nothing written is lost
        plan.save(result_path)
        print(f"wrote {out}: {format_size(compressed.size.total)} ({compressed.size.ratio_to_fp32:.2%} of fp32); "
              f"val top-1 {compressed.val_accuracy:.2%}, test top-1 {compressed.test_accuracy:.2%}\n"
              f"full-precision fine-tuned weights: {weights_path}; plan with results: {result_path}")
        return 0


