"""Commands on studies: search, compare, report, dashboard."""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna

from autocompress.cli._flags import COMPARE_SETTINGS, Command, add_setting_flags, study_name, typed
from autocompress.compare import COMPARE_OPTIONS, CompareSettings, compare, compare_settings
from autocompress.errors import AutocompressError
from autocompress.runner import report_study, run_search
from autocompress.settings import SETTING_OPTIONS, SearchSettings, load_settings
from autocompress.settings.options import integer
from autocompress.strategies import check_settings
from autocompress.study import StudyFacts, dashboard_argument, local_storage_file, open_storage, redact


def _search_flags(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names}


SEARCH_GROUPS = (  # (title, the scopes whose settings it holds): search --help groups its flags by mode
    ("every search", (None,)),
    ("mode bo (the default) and random: the Optuna study", ("bo", "kl", "val_accuracy")),
    ("mode admm", ("admm",)),
    ("mode bayesbits", ("bayesbits",)),
)


class SearchCommand(Command):
    name = "search"
    help = "search per-layer sparsity and bits so the packed model fits --target-size with the best accuracy"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", type=Path, help="preset YAML (see studies/*.yaml); flags override it")
        parser.add_argument("--set", dest="assignments", action="append", metavar="NAME=VALUE", type=_assignment,
                            help="any setting by its name, also those without a flag (docs/reference.md lists them): "
                                 "--set score_images=2048; repeatable")
        for title, scopes in SEARCH_GROUPS:
            names = [name for name, declared in SETTING_OPTIONS.items() if declared.scope in scopes and not declared.expert]
            add_setting_flags(parser.add_argument_group(title), SearchSettings, names, checked=False)

    def take_action(self, args: argparse.Namespace) -> int:
        flagged = [name for name, declared in SETTING_OPTIONS.items() if not declared.expert]
        settings = load_settings(args.config, _search_flags(args, flagged), dict(args.assignments or []),
                                 check=functools.partial(check_settings, search=True))
        try:
            run_search(settings)
        except KeyboardInterrupt:
            print(f"interrupted: finished trials are saved in {settings.resolved_storage}; "
                  "run the same command again to resume", file=sys.stderr)
            return 130
        return 0


def _assignment(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"must be NAME=VALUE such as score_images=2048, got {text!r}")
    return name.strip(), value


class CompareCommand(Command):
    name = "compare"
    help = "strategies side by side at one target and one training budget: uniform, naive pipelines, BO, ADMM, random..."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", type=Path, help="preset YAML (studies/*.yaml): model, checkpoint, data, bounds, lr")
        add_setting_flags(parser, SearchSettings, COMPARE_SETTINGS, checked=False)
        add_setting_flags(parser, CompareSettings, [name for name in COMPARE_OPTIONS], checked=False)

    def take_action(self, args: argparse.Namespace) -> int:
        search = load_settings(args.config, _search_flags(args, COMPARE_SETTINGS),
                               check=functools.partial(check_settings, shared=True))
        settings = compare_settings(search, **_search_flags(args, COMPARE_OPTIONS))
        try:
            compare(settings, command="autocompress " + shlex.join(args.argv))
        except KeyboardInterrupt:
            print(f"interrupted: finished strategies are kept in {settings.folder}; run the same command again to "
                  "go on with the rest", file=sys.stderr)
            return 130
        return 0


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", type=study_name, required=True, help="study name (its folder under --output-root)")
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUTPUT_ROOT/STUDY/study.db)")
    parser.add_argument("--output-root", type=Path, default=Path("studies"), help="folder of study folders (default: studies)")


def _study_storage(args: argparse.Namespace) -> str:
    url = args.storage or f"sqlite:///{args.output_root / args.study / 'study.db'}"
    local_file = local_storage_file(url)
    if local_file is not None and not local_file.is_file():
        raise AutocompressError(f"no study storage at {local_file}; pass --storage URL or the right --study")
    return url


class ReportCommand(Command):
    name = "report"
    help = "regenerate trials.csv, pareto.csv/png/html (front.csv/png after --front) and the summary of a study from its storage"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _study_arguments(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        url = _study_storage(args)
        storage = open_storage(url, heartbeat_seconds=None)
        names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
        if args.study not in names:
            raise AutocompressError(f"no study {args.study!r} in {redact(url)}; it holds: {', '.join(names) or 'none'}")
        paths = report_study(url, args.study, args.output_root / args.study)
        facts = StudyFacts.of(optuna.load_study(study_name=args.study, storage=storage))
        if facts.final is not None:
            print(f"final (after the last fine-tune): {facts.final}")
        print("wrote " + ", ".join(str(path) for path in paths.values()))
        return 0


class DashboardCommand(Command):
    name = "dashboard"
    help = "open a study in optuna-dashboard"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _study_arguments(parser)
        parser.add_argument("--port", type=typed(integer, 1, 65535), default=8080, help="(default: 8080)")
        parser.add_argument("--host", default="127.0.0.1", help="(default: 127.0.0.1)")

    def take_action(self, args: argparse.Namespace) -> int:
        storage = dashboard_argument(_study_storage(args))
        executable = shutil.which("optuna-dashboard") or shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
        if executable is None:
            raise AutocompressError("optuna-dashboard is not installed: pip install optuna-dashboard")
        print(f"optuna-dashboard {redact(storage)} on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
        os.execv(executable, [executable, storage, "--port", str(args.port), "--host", args.host])  # it becomes this process
        return 0  # not reached


