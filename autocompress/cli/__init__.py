"""Command line: argument parsing only; every command calls into the library.

Each sub-command is a small class with its flags and the action that calls the library (Optuna's CLI
shape); shared flags come from parent parsers derived from the settings' declarations (``_flags``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from autocompress import __version__
from autocompress.cli._flags import ArgumentParser, Command, shared_parsers
from autocompress.cli._model_commands import (
    ApplyCommand,
    EvaluateCommand,
    ExportCommand,
    InspectCommand,
    SizeCommand,
    TrainCommand,
)
from autocompress.cli._study_commands import CompareCommand, DashboardCommand, ReportCommand, SearchCommand
from autocompress.errors import AutocompressError

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

COMMANDS: tuple[Command, ...] = (
    TrainCommand(),
    EvaluateCommand(),
    SearchCommand(),
    CompareCommand(),
    ReportCommand(),
    DashboardCommand(),
    SizeCommand(),
    InspectCommand(),
    ApplyCommand(),
    ExportCommand(),
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="autocompress", description="Per-layer pruning and quantization under an exact byte budget.")
    parser.add_argument("--version", action="version", version=f"autocompress {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = shared_parsers()
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
    except BrokenPipeError:  # the reader of the output went away (| head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


