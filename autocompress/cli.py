"""Command line: argument parsing only; every command calls into the library."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from autocompress.errors import AutocompressError, PlanError
from autocompress.units import parse_size


class Command:
    """One sub-command: its flags and the action that calls the library."""

    name: str = ""
    help: str = ""
    parents: tuple[str, ...] = ()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags of this command besides the shared ones."""

    def take_action(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def _shared_parsers() -> dict[str, argparse.ArgumentParser]:
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", help="registered name (resnet18, resnet20, ...) or package.module:factory")
    model.add_argument("--checkpoint", type=Path, help="weights of the model (.pt/.th state dict)")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"])
    data.add_argument("--data-dir", type=Path, default=Path("data"), help="folder holding cifar-10-batches-py (default ./data)")
    data.add_argument("--val-size", type=int, default=5000, help="validation images carved from the training set")
    data.add_argument("--split-seed", type=int, default=0, help="seed of the stratified train/val split")
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    device.add_argument("--seed", type=int, default=0)
    plan = argparse.ArgumentParser(add_help=False)
    plan.add_argument("--plan", type=Path, required=True, help="plan YAML (format autocompress/plan)")
    plan.add_argument("--target-size", help="byte budget (50KB, 1MB, 512KiB, 50000); overrides the plan's target_bytes")
    return {"model": model, "data": data, "device": device, "plan": plan}


def _num_classes(dataset: str) -> int:
    return 100 if dataset == "cifar100" else 10


def _load_model(spec: str | None, checkpoint: Path | None, num_classes: int, *, required_checkpoint: bool = True):
    from autocompress.models import build_model, load_checkpoint

    if spec is None:
        raise AutocompressError("no model given: pass --model (e.g. --model resnet20) or use a plan that names its model")
    model = build_model(spec, num_classes=num_classes)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    elif required_checkpoint:
        raise AutocompressError(f"--checkpoint is required: the weights of {spec} to compress")
    return model


def _plan_and_model(args: argparse.Namespace):
    from autocompress.compress import compressible_layers
    from autocompress.plan import Plan

    plan = Plan.load(args.plan)
    if getattr(args, "target_size", None) is not None:
        plan.target_bytes = parse_size(args.target_size)
    spec = args.model or plan.model
    if args.model and plan.model and args.model != plan.model:
        raise PlanError(f"{args.plan}: model: the plan is for {plan.model!r} but --model is {args.model!r}")
    model = _load_model(spec, args.checkpoint, _num_classes(getattr(args, "dataset", "cifar10")))
    plan.check_layers(compressible_layers(model), source=str(args.plan))
    plan.model = spec
    return plan, model, spec


class TrainCommand(Command):
    name = "train"
    help = "train a baseline model (resumable) and save its checkpoint"
    parents = ("model", "data", "device")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--epochs", type=float, default=30)
        parser.add_argument("--lr", type=float, default=0.1)
        parser.add_argument("--batch-size", type=int, default=128)
        parser.add_argument("--weight-decay", type=float, default=5e-4)
        parser.add_argument("--out", type=Path, help="checkpoint to write (default checkpoints/MODEL-DATASET-sSEED.pt)")

    def take_action(self, args: argparse.Namespace) -> int:
        from autocompress.data import prepare_splits
        from autocompress.engine import evaluate, resolve_device, train
        from autocompress.models import save_checkpoint

        spec = args.model or "resnet18"
        device = resolve_device(args.device)
        splits = prepare_splits(args.dataset, args.data_dir, val_size=args.val_size, split_seed=args.split_seed)
        model = _load_model(spec, args.checkpoint, splits.num_classes, required_checkpoint=False)
        out = args.out or Path("checkpoints") / f"{spec.replace(':', '_')}-{args.dataset}-s{args.seed}.pt"
        state_path = out.with_name(out.name + ".state")
        print(f"training {spec} on {args.dataset} for {args.epochs:g} epochs on {device}; resumable state in {state_path}")
        result = train(
            model, splits.train, device=device, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
            weight_decay=args.weight_decay, seed=args.seed, val_set=splits.val, checkpoint_path=state_path,
        )
        test_accuracy = evaluate(model, splits.test, device=device)
        save_checkpoint(out, model, model_spec=spec, dataset=args.dataset, seed=args.seed, val_accuracy=result.val_accuracy,
                        test_accuracy=test_accuracy, epochs=args.epochs)
        print(f"saved {out}: val top-1 {result.val_accuracy:.2%}, test top-1 {test_accuracy:.2%}")
        return 0


class EvaluateCommand(Command):
    name = "evaluate"
    help = "top-1 accuracy on the validation and test splits (of a checkpoint or a packed file)"
    parents = ("model", "data", "device")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--packed", type=Path, help="a packed .acz file (instead of --model/--checkpoint)")

    def take_action(self, args: argparse.Namespace) -> int:
        from autocompress.data import prepare_splits
        from autocompress.engine import evaluate, resolve_device
        from autocompress.pack import read_packed

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
    parents = ("model", "plan")

    def take_action(self, args: argparse.Namespace) -> int:
        from autocompress.pack import estimate_size
        from autocompress.units import format_size

        plan, model, spec = _plan_and_model(args)
        report = estimate_size(model, plan, model_spec=spec)
        print(report.table())
        if plan.target_bytes is not None:
            verdict = "fits" if report.total <= plan.target_bytes else "DOES NOT FIT"
            print(f"target {format_size(plan.target_bytes)}: {verdict}")
        return 0


class ExportCommand(Command):
    name = "export"
    help = "write the packed .acz file of a checkpoint under a plan (no training)"
    parents = ("model", "plan")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", type=Path, required=True, help="packed file to write (.acz)")
        parser.add_argument("--num-classes", type=int, default=10)

    def take_action(self, args: argparse.Namespace) -> int:
        from autocompress.pack import estimate_size, export_packed
        from autocompress.units import format_size

        plan, model, spec = _plan_and_model(args)
        _refuse_over_target(plan, estimate_size(model, plan, model_spec=spec).total)
        _, report = export_packed(model, plan, args.out, model_spec=spec, num_classes=args.num_classes)
        print(f"wrote {args.out}: {format_size(report.total)}, {report.ratio_to_fp32:.2%} of fp32")
        return 0


class ApplyCommand(Command):
    name = "apply"
    help = "compress a checkpoint under a plan: optional fine-tune, BN recalibration, packed file, accuracy"
    parents = ("model", "data", "device", "plan")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--finetune-epochs", type=float, default=0.0, help="in-parallel pruning-quantization epochs (fractions allowed)")
        parser.add_argument("--lr", type=float, default=0.01)
        parser.add_argument("--batch-size", type=int, default=128)
        parser.add_argument("--out", type=Path, help="packed file to write (default: the plan's name with .acz)")

    def take_action(self, args: argparse.Namespace) -> int:
        from autocompress.data import prepare_splits
        from autocompress.engine import resolve_device
        from autocompress.models import save_checkpoint
        from autocompress.pipeline import finetune_under_plan_, harden_and_measure
        from autocompress.units import format_size

        plan, model, spec = _plan_and_model(args)
        device = resolve_device(args.device)
        splits = prepare_splits(args.dataset, args.data_dir, val_size=args.val_size, split_seed=args.split_seed)
        out = args.out or args.plan.with_suffix(".acz")
        finetune_under_plan_(model, plan, splits.train, device=device, epochs=args.finetune_epochs, lr=args.lr,
                             batch_size=args.batch_size, seed=args.seed)
        compressed = harden_and_measure(model, plan, model_spec=spec, num_classes=splits.num_classes, device=device,
                                        splits=splits, measure_test=True)
        _refuse_over_target(plan, compressed.size.total)
        compressed.write(out)
        weights_path = out.with_suffix(".pt")
        save_checkpoint(weights_path, model, model_spec=spec, plan=str(args.plan))
        plan.result = {"packed_bytes": compressed.size.total,
                       "accuracy": {"val": round(compressed.val_accuracy, 4), "test": round(compressed.test_accuracy, 4)}}
        result_path = out.with_name(out.stem + ".plan.yaml")  # never the input plan: nothing written is lost
        plan.save(result_path)
        print(f"wrote {out}: {format_size(compressed.size.total)} ({compressed.size.ratio_to_fp32:.2%} of fp32); "
              f"val top-1 {compressed.val_accuracy:.2%}, test top-1 {compressed.test_accuracy:.2%}\n"
              f"full-precision fine-tuned weights: {weights_path}; plan with results: {result_path}")
        return 0


def _refuse_over_target(plan, n_bytes: int) -> None:
    from autocompress.units import format_size

    if plan.target_bytes is not None and n_bytes > plan.target_bytes:
        raise PlanError(f"the packed model would be {format_size(n_bytes)}, over the plan's target_bytes "
                        f"{format_size(plan.target_bytes)}; raise sparsity or lower bits, or remove target_bytes; nothing was written")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``7200``, ``2h``, ``90m``, ``45s``."""
    units = {"s": 1, "m": 60, "h": 3600}
    cleaned = text.strip().lower()
    try:
        if cleaned and cleaned[-1] in units:
            return float(cleaned[:-1]) * units[cleaned[-1]]
        return float(cleaned)
    except ValueError:
        # argparse turns this into one "invalid value" line with the usage (exit 2), no traceback
        raise argparse.ArgumentTypeError(f"cannot read {text!r} as a duration; use seconds (7200) or 2h, 90m, 45s") from None


class SearchCommand(Command):
    name = "search"
    help = "search per-layer sparsity and bits so the packed model fits --target-size with the best accuracy"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        # Every default is None: a preset (--config) supplies values, flags given here override it.
        parser.add_argument("--target-size", help="byte budget of the packed file: 50KB, 1MB, 512KiB, 50000")
        parser.add_argument("--config", type=Path, help="preset YAML (see studies/*.yaml); flags override it")
        parser.add_argument("--mode", choices=["bo", "admm"],
                            help="bo: Bayesian optimisation over per-layer settings (CLIP-Q style, default); "
                                 "admm: constrained optimisation that learns them from the target (Yang et al. 2020)")
        parser.add_argument("--targets", help="admm: a sweep of targets, e.g. 200KB,100KB,50KB (one run each, a Pareto front)")
        parser.add_argument("--admm-epochs", type=float, help="admm: epochs of ADMM training before the plan is made hard")
        parser.add_argument("--projections-per-epoch", type=int, help="admm: Z-steps (projections onto the size budget) per epoch")
        parser.add_argument("--rho-start", type=float, help="admm: penalty weight at the start (grows geometrically)")
        parser.add_argument("--rho-end", type=float, help="admm: penalty weight at the last projection")
        parser.add_argument("--sampler", choices=["tpe", "gp", "botorch", "nsga2", "random"])
        parser.add_argument("--pruner", choices=["median", "hyperband", "none"])
        parser.add_argument("--model", help="registered model or package.module:factory (default resnet18)")
        parser.add_argument("--checkpoint", help="trained weights; without it a baseline is trained first (slow on a CPU)")
        parser.add_argument("--trials", type=int, help="total finished trials of the study (a resumed study counts its own)")
        parser.add_argument("--timeout", type=parse_duration, help="stop starting trials after this long: 7200, 2h, 90m")
        parser.add_argument("--storage", help="Optuna storage (default sqlite:///studies/NAME/study.db): any SQLAlchemy URL, "
                                              "e.g. postgresql://user:password@host/db for workers on many machines, "
                                              "or journal:path/study.log (a journal file: several processes, no server)")
        parser.add_argument("--study-name", help="default MODEL-TARGETB; the same name resumes the study, "
                                                 "and processes with the same storage and name share it")
        parser.add_argument("--n-jobs", type=int, help="worker processes on this machine (one per GPU where there are several)")
        parser.add_argument("--worker", action="store_const", const=True,
                            help="join the study as a worker: run trials only, leave the final fine-tune and files to "
                                 "the process started without --worker")
        parser.add_argument("--heartbeat", type=int, dest="heartbeat_seconds",
                            help="seconds between a running trial's heartbeats (default 30); a trial silent for three "
                                 "is taken as its worker's death, marked failed and re-queued")
        parser.add_argument("--max-retries", type=int, help="times a dead worker's trial is re-queued (default 2)")
        parser.add_argument("--output-root", help="folder of study folders (default studies)")
        parser.add_argument("--epochs-per-trial", type=float, help="fine-tuning per trial, in epochs (fractions allowed)")
        parser.add_argument("--final-epochs", type=float, help="fine-tuning of the best plan at the end")
        parser.add_argument("--lr", type=float, help="fine-tuning learning rate (cosine to 0)")
        parser.add_argument("--distill", action="store_const", const=True,
                            help="the final fine-tune also learns from the uncompressed model's soft outputs "
                                 "(knowledge distillation; about 15 % more time per step)")
        parser.add_argument("--distill-temperature", type=float, help="softmax temperature of --distill (default 4)")
        parser.add_argument("--distill-weight", type=float, help="share of the teacher term in the loss (default 0.9)")
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--device", help="auto | cpu | cuda")
        parser.add_argument("--seed", type=int)
        parser.add_argument("--dataset", choices=["cifar10", "cifar100"])
        parser.add_argument("--data-dir", help="folder holding cifar-10-batches-py (default ./data)")
        parser.add_argument("--val-size", type=int)
        parser.add_argument("--max-sparsity", type=float, dest="sparsity_max")
        parser.add_argument("--min-bits", type=int, dest="bits_min")
        parser.add_argument("--max-bits", type=int, dest="bits_max")
        parser.add_argument("--quantizers", help="comma-separated: clipq,uniform,kmeans (several: searched per layer)")
        parser.add_argument("--no-warm-start", dest="warm_start", action="store_const", const=False)
        parser.add_argument("--space", choices=["absolute", "relative"],
                            help="absolute per-layer values (default), or shifts around the best uniform plan")

    def take_action(self, args: argparse.Namespace) -> int:
        from autocompress.search import load_settings, run_search

        overrides = {key: value for key, value in vars(args).items() if key not in ("config", "action", "command", "argv")}
        overrides["timeout_seconds"] = overrides.pop("timeout", None)
        settings = load_settings(args.config, overrides)
        try:
            run_search(settings)
        except KeyboardInterrupt:
            print(f"interrupted: finished trials are saved in {settings.resolved_storage}; "
                  "run the same command again to resume", file=sys.stderr)
            return 130
        return 0


class CompareCommand(Command):
    name = "compare"
    help = ("strategies side by side at one target and one training budget: uniform, naive prune-then-quantize and "
            "quantize-then-prune, BO, ADMM, random search")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--target-size", help="byte budget of every strategy's packed file: 50KB, 1MB, 50000")
        parser.add_argument("--config", type=Path, help="preset YAML (studies/*.yaml): model, checkpoint, data, bounds, lr")
        parser.add_argument("--epochs", type=float, default=2.0,
                            help="fine-tuning epochs each strategy spends in all (bo/random: half on trials, half final)")
        parser.add_argument("--trials", type=int, default=6, help="trials of the bo and random studies")
        parser.add_argument("--strategies", help="comma-separated subset of " + ",".join(_strategies()))
        parser.add_argument("--name", help="folder under --output-root (default MODEL-TARGETB-compare)")
        parser.add_argument("--model")
        parser.add_argument("--checkpoint", help="trained weights every strategy starts from; without it a baseline is "
                                                 "trained first and cached, as for search (slow on a CPU)")
        parser.add_argument("--output-root", help="default studies")
        parser.add_argument("--storage", help="Optuna storage for every strategy's study (default sqlite:///FOLDER/study.db)")
        parser.add_argument("--lr", type=float)
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--device")
        parser.add_argument("--seed", type=int)
        parser.add_argument("--dataset", choices=["cifar10", "cifar100"])
        parser.add_argument("--data-dir")
        parser.add_argument("--val-size", type=int)
        parser.add_argument("--max-sparsity", type=float, dest="sparsity_max")
        parser.add_argument("--min-bits", type=int, dest="bits_min")
        parser.add_argument("--max-bits", type=int, dest="bits_max")

    def take_action(self, args: argparse.Namespace) -> int:
        import shlex

        from autocompress.search import CompareSettings, compare, load_settings

        own = ("config", "action", "command", "argv", "epochs", "trials", "strategies", "name")
        overrides = {key: value for key, value in vars(args).items() if key not in own}
        search = load_settings(args.config, overrides)
        strategies = tuple(part.strip() for part in args.strategies.split(",")) if args.strategies else _strategies()
        settings = CompareSettings(search, epochs=args.epochs, trials=args.trials, strategies=strategies, name=args.name)
        try:
            compare(settings, command="autocompress " + shlex.join(args.argv))
        except KeyboardInterrupt:
            print(f"interrupted: finished strategies are kept in {settings.folder}; run the same command again to "
                  "go on with the rest", file=sys.stderr)
            return 130
        return 0


def _strategies() -> tuple[str, ...]:
    from autocompress.search import STRATEGIES

    return STRATEGIES


class ReportCommand(Command):
    name = "report"
    help = "regenerate trials.csv, pareto.csv/png/html and the summary of a study from its storage"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--study", required=True, help="study name")
        parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///studies/NAME/study.db)")
        parser.add_argument("--output-root", type=Path, default=Path("studies"))

    def take_action(self, args: argparse.Namespace) -> int:
        import optuna

        from autocompress.report import summary_table, trials_frame, write_study_report

        from autocompress.search import open_storage
        from autocompress.search._storage import local_storage_file, redact

        folder = args.output_root / args.study
        url = args.storage or f"sqlite:///{folder / 'study.db'}"
        local_file = local_storage_file(url)
        if local_file is not None and not local_file.is_file():
            raise AutocompressError(f"no study storage at {local_file}; pass --storage URL or the right --study")
        storage = open_storage(url, heartbeat_seconds=None)
        try:
            study = optuna.load_study(study_name=args.study, storage=storage)
        except KeyError:
            names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
            raise AutocompressError(f"no study {args.study!r} in {redact(url)}; it holds: {', '.join(names) or 'none'}") from None
        paths = write_study_report(study, folder)
        print(summary_table(trials_frame(study), study.user_attrs.get("target_bytes"), study.user_attrs.get("baseline_accuracy")))
        if "final" in study.user_attrs:
            print(f"final (after the last fine-tune): {study.user_attrs['final']}")
        print("wrote " + ", ".join(str(path) for path in paths.values()))
        return 0


class DashboardCommand(Command):
    name = "dashboard"
    help = "open a study in optuna-dashboard"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--study", required=True)
        parser.add_argument("--storage")
        parser.add_argument("--output-root", type=Path, default=Path("studies"))
        parser.add_argument("--port", type=int, default=8080)
        parser.add_argument("--host", default="127.0.0.1")

    def take_action(self, args: argparse.Namespace) -> int:
        import os
        import shutil

        from autocompress.search._storage import dashboard_argument, local_storage_file, redact

        url = args.storage or f"sqlite:///{args.output_root / args.study / 'study.db'}"
        local_file = local_storage_file(url)
        if local_file is not None and not local_file.is_file():
            raise AutocompressError(f"no study storage at {local_file}; pass --storage URL or the right --study")
        storage = dashboard_argument(url)
        executable = shutil.which("optuna-dashboard") or shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
        if executable is None:
            raise AutocompressError("optuna-dashboard is not installed: pip install optuna-dashboard")
        print(f"optuna-dashboard {redact(storage)} on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
        os.execv(executable, [executable, storage, "--port", str(args.port), "--host", args.host])  # it becomes this process
        return 0  # not reached


COMMANDS: tuple[Command, ...] = (
    TrainCommand(),
    EvaluateCommand(),
    SearchCommand(),
    CompareCommand(),
    ReportCommand(),
    DashboardCommand(),
    SizeCommand(),
    ApplyCommand(),
    ExportCommand(),
)


def build_parser() -> argparse.ArgumentParser:
    from autocompress import __version__

    parser = argparse.ArgumentParser(prog="autocompress", description="Per-layer pruning and quantization under an exact byte budget.")
    parser.add_argument("--version", action="version", version=f"autocompress {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _shared_parsers()
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help,
                                    parents=[shared[name] for name in command.parents])
        command.add_arguments(sub)
        sub.set_defaults(action=command.take_action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line as given, for reports
    try:
        return int(args.action(args))
    except AutocompressError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
