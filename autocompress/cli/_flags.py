"""The command line's shared parts: the one-line error, the Command base, and flags derived from settings.

The flags that name settings (``--model``, ``--max-sparsity``, ``--trials``...) are derived from the
settings' own declarations (``SearchSettings`` and ``CompareSettings``), so every command that takes
one spells it, types it, checks it and documents its default the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

from autocompress.files import OutputPathError, check_output_path
from autocompress.settings import SearchSettings, default_of, options_of
from autocompress.settings.options import plain_name
from autocompress.strategies import registry_of

SHARED_GROUPS: dict[str, tuple[str, ...]] = {
    "model": ("model", "checkpoint"),
    "data": ("dataset", "data_dir", "val_size", "split_seed"),
    "device": ("device", "seed"),
    "training": ("precision",),
}
# The search settings `compare` takes (its budget flags are its own, from CompareSettings).
COMPARE_SETTINGS = ("target_bytes", "model", "checkpoint", "dataset", "data_dir", "val_size", "split_seed", "device",
                    "precision", "seed", "output_root", "storage", "lr", "batch_size", "sparsity_max", "bits_min", "bits_max",
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
    allowed = getattr(declared.read, "allowed", None) or registry_of(declared, search=True)
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


def add_setting_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, names: Iterable[str], *, checked: bool,
                      defaults: bool = True) -> None:
    """Flags for the settings ``names`` of the dataclass ``cls``.

    ``checked``: the flag's value is read and checked by argparse, and defaults to the setting's default
    (commands without presets; ``defaults=False`` leaves them None, for flags a command may take from
    elsewhere). Otherwise the raw text is kept and defaults to None, so that a preset can supply it;
    the settings check it then, naming the flag in any error. The help shows the setting's default."""
    declared_options = options_of(cls)
    for name in names:
        declared = declared_options[name]
        default = default_of(cls, name)
        given = default if checked and defaults else None
        keywords: dict[str, Any] = {"dest": name, "help": _help(declared, default if defaults else None)}
        if declared.is_switch:
            keywords.update(action="store_const", const=declared.const, default=given)
        else:
            keywords.update(metavar=declared.metavar or getattr(declared.read, "metavar", "VALUE"), default=given)
            if checked:
                keywords["type"] = _as_type(declared.read)
        assert declared.flag is not None, f"setting {name!r} has no command-line flag"
        parser.add_argument(declared.flag, **keywords)


def shared_parsers() -> dict[str, ArgumentParser]:
    parents = {}
    for group, names in SHARED_GROUPS.items():
        parent = ArgumentParser(add_help=False)
        add_setting_flags(parent, SearchSettings, names, checked=True, defaults=group != "model")
        parents[group] = parent
    return parents


def typed(read_factory: Callable[..., Callable[[Any], Any]], *args: Any, **kwargs: Any) -> Callable[[str], Any]:
    return _as_type(read_factory(*args, **kwargs))


def output_file(text: str) -> Path:
    try:
        return check_output_path(text)
    except OutputPathError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def study_name(text: str) -> str:
    return _as_type(plain_name())(text)


