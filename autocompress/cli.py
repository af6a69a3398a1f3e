"""Command line: argument parsing only; every command calls into the library.

The flags that name settings (``--model``, ``--max-sparsity``, ``--trials``...) are derived from the
settings' own declarations (``SearchSettings`` and ``CompareSettings``), so every command that takes
one spells it, types it, checks it and documents its default the same way.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from autocompress.errors import AutocompressError, PlanError
from autocompress.units import parse_size

# What every command that takes them shares, by group.
SHARED_GROUPS: dict[str, tuple[str, ...]] = {
    "model": ("model", "checkpoint"),
    "data": ("dataset", "data_dir", "val_size", "split_seed"),
    "device": ("device", "seed"),
}
# The search settings `compare` takes (its budget flags are its own, from CompareSettings).
COMPARE_SETTINGS = ("target_bytes", "model", "checkpoint", "dataset", "data_dir", "val_size", "split_seed", "device",
                    "seed", "output_root", "storage", "lr", "batch_size", "sparsity_max", "bits_min", "bits_max",
                    "quantizers", "sampler", "distill")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``error:`` line that says where to look (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see '{self.prog} --help'\n")


class Command:
    """One sub-command: its flags and the action that calls the library."""

    name: str = ""
    help: str = ""
    groups: tuple[str, ...] = ()  # shared flag groups (SHARED_GROUPS)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags of this command besides the shared ones."""

    def take_action(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def _help(declared: Any, default: Any) -> str:
    allowed = getattr(declared.read, "allowed", None)
    listed = f"; one of {', '.join(allowed())}" if allowed is not None and not declared.is_switch else ""
    shown = "" if default is None or declared.is_switch else f" (default: {_shown(default)})"
    return (declared.help + listed + shown).replace("%", "%%")


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _as_type(read: Callable[[Any], Any]) -> Callable[[str], Any]:
    """A setting's reader as an argparse type: its message becomes argparse's one-line error."""

    def convert(text: str) -> Any:
        try:
            return read(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def add_setting_flags(parser: argparse.ArgumentParser, cls: type, names: Iterable[str], *, typed: bool,
                      defaults: bool = True) -> None:
    """Flags for the settings ``names`` of the dataclass ``cls``.

    ``typed``: the flag's value is read and checked by argparse, and defaults to the setting's default
    (commands without presets; ``defaults=False`` leaves them None, for flags a command may take from
    elsewhere). Otherwise the raw text is kept and defaults to None, so that a preset can supply it;
    the settings check it then, naming the flag in any error. The help shows the setting's default."""
    from autocompress.search import options_of
    from autocompress.search._options import default_of

    declared_options = options_of(cls)
    for name in names:
        declared = declared_options[name]
        default = default_of(cls, name)
        given = default if typed and defaults else None
        keywords: dict[str, Any] = {"dest": name, "help": _help(declared, default if defaults else None)}
        if declared.is_switch:
            keywords.update(action="store_const", const=declared.const, default=given)
        else:
            keywords.update(metavar=declared.metavar or getattr(declared.read, "metavar", "VALUE"), default=given)
            if typed:
                keywords["type"] = _as_type(declared.read)
        assert declared.flag is not None, f"setting {name!r} has no command-line flag"
        parser.add_argument(declared.flag, **keywords)


def _shared_parsers() -> dict[str, ArgumentParser]:
    from autocompress.search import SearchSettings

    parents = {}
    for group, names in SHARED_GROUPS.items():
        parent = ArgumentParser(add_help=False)
        add_setting_flags(parent, SearchSettings, names, typed=True, defaults=group != "model")
        parents[group] = parent
    return parents


def _typed(read_factory: Callable[..., Callable[[Any], Any]], *args: Any, **kwargs: Any) -> Callable[[str], Any]:
    return _as_type(read_factory(*args, **kwargs))


def _output_file(text: str) -> Path:
    from autocompress.files import OutputPathError, check_output_path

    try:
        return check_output_path(text)
    except OutputPathError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _study_name(text: str) -> str:
    from autocompress.search._options import plain_name

    return _as_type(plain_name())(text)


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, help="plan YAML (format autocompress/plan)")
    parser.add_argument("--target-size", help="byte budget (50KB, 1MB, 512KiB, 50000); overrides the plan's target_bytes")


def _load_model(spec: str | None, checkpoint: Path | str | None, num_classes: int, *, required_checkpoint: bool = True):  # noqa: ANN202
    from autocompress.models import build_model, load_checkpoint

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


def _plan_and_model(args: argparse.Namespace):  # noqa: ANN202
    from autocompress.compress import compressible_layers
    from autocompress.plan import Plan

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


def _refuse_over_target(plan: Any, n_bytes: int) -> None:
    from autocompress.units import format_size

    if plan.target_bytes is not None and n_bytes > plan.target_bytes:
        raise PlanError(f"the packed model would be {format_size(n_bytes)}, over the plan's target_bytes "
                        f"{format_size(plan.target_bytes)}; raise sparsity or lower bits, or remove target_bytes; nothing was written")


class TrainCommand(Command):
    name = "train"
    help = "train a baseline model (resumable) and save its checkpoint"
    groups = ("model", "data", "device")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from autocompress.search._options import integer, number

        parser.add_argument("--epochs", type=_typed(number, above=0), default=30.0, help="training epochs (default: 30)")
        parser.add_argument("--lr", type=_typed(number, above=0), default=0.1, help="peak learning rate (default: 0.1)")
        parser.add_argument("--batch-size", type=_typed(integer, minimum=1), default=128, help="(default: 128)")
        parser.add_argument("--weight-decay", type=_typed(number, minimum=0), default=5e-4, help="(default: 0.0005)")
        parser.add_argument("--out", type=_output_file, help="checkpoint to write (default checkpoints/MODEL-DATASET-sSEED.pt)")

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
        result = train(model, splits.train, device=device, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                       weight_decay=args.weight_decay, seed=args.seed, val_set=splits.val, checkpoint_path=state_path)
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
        import time

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
    groups = ("model",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _plan_arguments(parser)

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
    groups = ("model",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from autocompress.search._options import integer

        _plan_arguments(parser)
        parser.add_argument("--out", type=_output_file, required=True, help="packed file to write (.acz)")
        parser.add_argument("--num-classes", type=_typed(integer, minimum=1), default=10, help="(default: 10)")

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
    groups = ("model", "data", "device")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from autocompress.search._options import integer, number

        _plan_arguments(parser)
        parser.add_argument("--finetune-epochs", type=_typed(number, minimum=0), default=0.0,
                            help="in-parallel pruning-quantization epochs, fractions allowed (default: 0)")
        parser.add_argument("--lr", type=_typed(number, above=0), default=0.01, help="(default: 0.01)")
        parser.add_argument("--batch-size", type=_typed(integer, minimum=1), default=128, help="(default: 128)")
        parser.add_argument("--out", type=_output_file, help="packed file to write (default: the plan's name with .acz)")

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
                       "accuracy": {"val": round(compressed.val_accuracy or 0.0, 4), "test": round(compressed.test_accuracy or 0.0, 4)}}
        result_path = out.with_name(out.stem + ".plan.yaml")  # never the input plan: nothing written is lost
        plan.save(result_path)
        print(f"wrote {out}: {format_size(compressed.size.total)} ({compressed.size.ratio_to_fp32:.2%} of fp32); "
              f"val top-1 {compressed.val_accuracy:.2%}, test top-1 {compressed.test_accuracy:.2%}\n"
              f"full-precision fine-tuned weights: {weights_path}; plan with results: {result_path}")
        return 0


def _search_flags(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names}


class SearchCommand(Command):
    name = "search"
    help = "search per-layer sparsity and bits so the packed model fits --target-size with the best accuracy"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from autocompress.search import SETTING_OPTIONS, SearchSettings

        parser.add_argument("--config", type=Path, help="preset YAML (see studies/*.yaml); flags override it")
        add_setting_flags(parser, SearchSettings, SETTING_OPTIONS, typed=False)

    def take_action(self, args: argparse.Namespace) -> int:
        from autocompress.runner import run_search
        from autocompress.search import SETTING_OPTIONS, load_settings

        settings = load_settings(args.config, _search_flags(args, SETTING_OPTIONS))
        try:
            run_search(settings)
        except KeyboardInterrupt:
            print(f"interrupted: finished trials are saved in {settings.resolved_storage}; "
                  "run the same command again to resume", file=sys.stderr)
            return 130
        return 0


class CompareCommand(Command):
    name = "compare"
    help = "strategies side by side at one target and one training budget: uniform, naive pipelines, BO, ADMM, random..."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from autocompress.compare import COMPARE_OPTIONS, CompareSettings
        from autocompress.search import SearchSettings

        parser.add_argument("--config", type=Path, help="preset YAML (studies/*.yaml): model, checkpoint, data, bounds, lr")
        add_setting_flags(parser, SearchSettings, COMPARE_SETTINGS, typed=False)
        add_setting_flags(parser, CompareSettings, [name for name in COMPARE_OPTIONS], typed=False)

    def take_action(self, args: argparse.Namespace) -> int:
        from autocompress.compare import COMPARE_OPTIONS, compare, compare_settings
        from autocompress.search import load_settings

        search = load_settings(args.config, _search_flags(args, COMPARE_SETTINGS))
        settings = compare_settings(search, **_search_flags(args, COMPARE_OPTIONS))
        try:
            compare(settings, command="autocompress " + shlex.join(args.argv))
        except KeyboardInterrupt:
            print(f"interrupted: finished strategies are kept in {settings.folder}; run the same command again to "
                  "go on with the rest", file=sys.stderr)
            return 130
        return 0


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", type=_study_name, required=True, help="study name (its folder under --output-root)")
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUTPUT_ROOT/STUDY/study.db)")
    parser.add_argument("--output-root", type=Path, default=Path("studies"), help="folder of study folders (default: studies)")


def _study_storage(args: argparse.Namespace) -> str:
    from autocompress.search import local_storage_file

    url = args.storage or f"sqlite:///{args.output_root / args.study / 'study.db'}"
    local_file = local_storage_file(url)
    if local_file is not None and not local_file.is_file():
        raise AutocompressError(f"no study storage at {local_file}; pass --storage URL or the right --study")
    return url


class ReportCommand(Command):
    name = "report"
    help = "regenerate trials.csv, pareto.csv/png/html and the summary of a study from its storage"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _study_arguments(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        import optuna

        from autocompress.report import summary_table, trials_frame, write_study_report
        from autocompress.search import StudyFacts, open_storage, redact

        url = _study_storage(args)
        storage = open_storage(url, heartbeat_seconds=None)
        try:
            study = optuna.load_study(study_name=args.study, storage=storage)
        except KeyError:
            names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
            raise AutocompressError(f"no study {args.study!r} in {redact(url)}; it holds: {', '.join(names) or 'none'}") from None
        paths = write_study_report(study, args.output_root / args.study)
        facts = StudyFacts.of(study)
        print(summary_table(trials_frame(study), facts.target_bytes, facts.baseline_accuracy))
        if facts.final is not None:
            print(f"final (after the last fine-tune): {facts.final}")
        print("wrote " + ", ".join(str(path) for path in paths.values()))
        return 0


class DashboardCommand(Command):
    name = "dashboard"
    help = "open a study in optuna-dashboard"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from autocompress.search._options import integer

        _study_arguments(parser)
        parser.add_argument("--port", type=_typed(integer, 1, 65535), default=8080, help="(default: 8080)")
        parser.add_argument("--host", default="127.0.0.1", help="(default: 127.0.0.1)")

    def take_action(self, args: argparse.Namespace) -> int:
        import os
        import shutil

        from autocompress.search import dashboard_argument, redact

        storage = dashboard_argument(_study_storage(args))
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

    parser = ArgumentParser(prog="autocompress", description="Per-layer pruning and quantization under an exact byte budget.")
    parser.add_argument("--version", action="version", version=f"autocompress {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _shared_parsers()
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help,
                                    parents=[shared[group] for group in command.groups])
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
