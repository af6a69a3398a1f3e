"""How a setting is read and checked: one declaration per setting, shared by presets, flags and Python.

Each field of a settings dataclass carries an :class:`Option` in its metadata: the command-line flag
(if any), the help text, and a *reader* that turns a raw value (a YAML value from a preset, a string
from a flag, or a Python value) into the typed value or raises :class:`SettingValueError` with a
sentence saying what is wrong and what is allowed. The dataclass applies the readers in
``__post_init__``, so a rule is written once and holds whatever the value's source; the CLI derives
its flags (names, help, shown defaults) from the same declarations, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocompress.errors import AutocompressError, SizeFormatError
from autocompress.units import parse_duration, parse_size

Reader = Callable[[Any], Any]
_MISSING = object()


class SettingValueError(ValueError):
    """A raw value a reader cannot accept; the message says what is allowed."""


class SettingError(AutocompressError):
    """A setting that is not valid, with the fields it concerns (for naming where they came from)."""

    def __init__(self, fields: Sequence[str], problem: str, *, subject: str | None = None) -> None:
        super().__init__(f"{subject} {problem}" if subject else problem)
        self.fields = tuple(fields)
        self.problem = problem  # without the subject: where the value came from stands before it


@dataclass(frozen=True)
class Option:
    """The declaration of one setting besides its name and default."""

    help: str
    read: Reader
    flag: str | None = None  # None: presets and Python only
    const: Any = _MISSING  # a switch: the flag takes no value and sets this one
    metavar: str | None = None
    nullable: bool = False  # None is a valid value (it means "not set": a documented default applies)
    scope: str | None = None  # the mode or score it belongs to (see ``SCOPES`` in the settings); None: every search
    expert: bool = False  # set in a preset, from Python or with ``--set NAME=VALUE``; no flag of its own in ``search --help``
    kept: bool = False  # part of what a study is: a rerun of the study with another value is refused

    @property
    def is_switch(self) -> bool:
        return self.const is not _MISSING


def option(default: Any = _MISSING, *, help: str, read: Reader, flag: str | None = None, const: Any = _MISSING,
           metavar: str | None = None, default_factory: Callable[[], Any] | None = None, scope: str | None = None,
           expert: bool = False, kept: bool = False) -> Any:
    """A dataclass field declared with its :class:`Option` (``None`` as default makes it nullable)."""
    declared = Option(help=help, read=read, flag=flag, const=const, metavar=metavar, nullable=default is None, scope=scope,
                      expert=expert, kept=kept)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={"option": declared})
    if default is _MISSING:  # a required setting
        return dataclasses.field(metadata={"option": declared})
    return dataclasses.field(default=default, metadata={"option": declared})


def options_of(cls: type) -> dict[str, Option]:
    """Every declared option of a settings dataclass, by field name, in declaration order."""
    return {field.name: field.metadata["option"] for field in dataclasses.fields(cls) if "option" in field.metadata}


def apply_readers(settings: Any) -> None:
    """Read every declared field of ``settings`` in place; the first bad one raises :class:`SettingError`."""
    for name, declared in options_of(type(settings)).items():
        value = getattr(settings, name)
        if value is None and declared.nullable:
            continue
        try:
            setattr(settings, name, declared.read(value))
        except SettingValueError as error:
            raise SettingError([name], str(error), subject=name) from None


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` (called for a default factory), for help texts."""
    field = next(field for field in dataclasses.fields(cls) if field.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


# ---- readers ---------------------------------------------------------------------------------------------------


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _described(read: Reader, metavar: str, allowed: Callable[[], Sequence[str]] | None = None) -> Reader:
    """Mark a reader with the metavar its flag shows (and the names it allows, listed in the help)."""
    read.metavar = metavar  # type: ignore[attr-defined]
    read.allowed = allowed  # type: ignore[attr-defined]
    return read


def integer(minimum: int | None = None, maximum: int | None = None) -> Reader:
    """A whole number within the bounds (inclusive); a string of digits is read too."""

    def read(value: Any) -> int:
        number: Any = value
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            number = int(value)
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if not isinstance(number, int) or isinstance(number, bool):
            raise SettingValueError(f"must be a whole number{_range_text(minimum, maximum)}, got {value!r}")
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise SettingValueError(f"must be a whole number{_range_text(minimum, maximum)}, got {number}")
        return number

    return _described(read, "N")


def number(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None,
           below: float | None = None) -> Reader:
    """A finite real number within the bounds (``minimum``/``maximum`` inclusive, ``above``/``below`` strict)."""
    allowed = _bounds_text(minimum, maximum, above, below)

    def read(value: Any) -> float:
        result: Any = value
        if isinstance(value, str):
            try:
                result = float(value)
            except ValueError:
                raise SettingValueError(f"must be a number{allowed}, got {value!r}") from None
        if not _is_real(result) or not math.isfinite(result):
            raise SettingValueError(f"must be a number{allowed}, got {value!r}")
        result = float(result)
        if ((minimum is not None and result < minimum) or (maximum is not None and result > maximum)
                or (above is not None and result <= above) or (below is not None and result >= below)):
            raise SettingValueError(f"must be a number{allowed}, got {result:g}")
        return result

    return _described(read, "X")


def size() -> Reader:
    """A positive byte size with its unit (``50KB``, ``1MiB``) or a whole number of bytes."""

    def read(value: Any) -> int:
        try:
            return parse_size(value)
        except SizeFormatError as error:
            raise SettingValueError(f"must be a positive size: {error}") from None

    return _described(read, "SIZE")


def sizes() -> Reader:
    """A non-empty list of sizes: a YAML list or a comma-separated string (``200KB,100KB``)."""
    one = size()

    def read(value: Any) -> list[int]:
        items = _items(value)
        if not items:
            raise SettingValueError(f"must list at least one size, e.g. 200KB,100KB,50KB; got {value!r}")
        return [one(item) for item in items]

    return _described(read, "SIZES")


def size_range() -> Reader:
    """Two sizes ``LOW:HIGH`` (``25KB:200KB``) with LOW < HIGH, or a YAML list of the two."""
    one = size()

    def read(value: Any) -> list[int]:
        parts = value.split(":") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
        if len(parts) != 2:
            raise SettingValueError(f"must be a range of sizes LOW:HIGH such as 25KB:200KB, got {value!r}")
        low, high = one(parts[0]), one(parts[1])
        if low >= high:
            raise SettingValueError(f"must be a range LOW:HIGH with LOW below HIGH, got {value!r}")
        return [low, high]

    return _described(read, "LOW:HIGH")


def front_range() -> Reader:
    """``auto``, ``off``, or a budget range ``LOW:HIGH`` (see :func:`size_range`)."""
    budgets = size_range()

    def read(value: Any) -> str | list[int]:
        if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
            return "off"
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            result: list[int] = budgets(value)
        except SettingValueError as error:
            raise SettingValueError(f"{error} (or auto, or off)") from None
        return result

    return _described(read, "LOW:HIGH|auto|off")


def duration() -> Reader:
    """A positive duration: seconds (``7200``) or with a unit (``2h``, ``90m``, ``45s``)."""

    def read(value: Any) -> float:
        try:
            seconds = float(value) if _is_real(value) else parse_duration(str(value))
        except ValueError as error:
            raise SettingValueError(f"must be a positive duration: {error}") from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise SettingValueError(f"must be a positive duration such as 7200, 2h, 90m or 45s; got {value!r}")
        return seconds

    return _described(read, "DURATION")


def switch() -> Reader:
    """true or false (YAML booleans; also the words true/false/yes/no/1/0)."""
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

    def read(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in words:
            return words[value.strip().lower()]
        raise SettingValueError(f"must be true or false, got {value!r}")

    return read


def text(pattern: str | None = None, describe: str = "") -> Reader:
    """A non-empty string (matching ``pattern`` when given; ``describe`` says what it should look like)."""

    def read(value: Any) -> str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip():
            raise SettingValueError(f"must be a non-empty text{describe and ' (' + describe + ')'}, got {value!r}")
        result = str(value).strip()
        if pattern is not None and not re.fullmatch(pattern, result):
            raise SettingValueError(f"must be {describe}, got {result!r}")
        return result

    return _described(read, "TEXT")


def choice(names: Callable[[], Sequence[str]]) -> Reader:
    """One of ``names()`` (a registry's names, read when the value is checked)."""

    def read(value: Any) -> str:
        allowed = list(names())
        if value not in allowed:
            raise SettingValueError(f"must be one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    return _described(read, "NAME", names)


def choices(names: Callable[[], Sequence[str]]) -> Reader:
    """A non-empty list of ``names()`` without repeats: a YAML list or a comma-separated string."""

    def read(value: Any) -> list[str]:
        items = _items(value)
        allowed = list(names())
        unknown = [item for item in items if item not in allowed]
        if not items or unknown or len(set(items)) != len(items):
            raise SettingValueError(f"must list some of {', '.join(allowed)} (comma-separated, each once), got {value!r}")
        return items

    return _described(read, "NAMES", names)


def registered(registry: str, *, many: bool = False) -> Reader:
    """A name from the registry called ``registry`` (modes, quantizers, samplers, pruners, datasets); ``many``: a
    non-empty list of them without repeats (a YAML list or a comma-separated string).

    The settings import no registry (they would import torch and Optuna): this reader checks the form, and
    :func:`autocompress.strategies.check_settings`, which knows every registry, checks the name."""

    def read(value: Any) -> str | list[str]:
        items = _items(value) if many else [value]
        if not items or any(not isinstance(item, str) or not item.strip() for item in items):
            raise SettingValueError(f"must {'list' if many else 'be'} {registry} by name, got {value!r}")
        names = [item.strip() for item in items]
        if len(set(names)) != len(names):
            raise SettingValueError(f"must list each of its {registry} once, got {value!r}")
        return names if many else names[0]

    read.registry = registry  # type: ignore[attr-defined]
    read.many = many  # type: ignore[attr-defined]
    return _described(read, "NAMES" if many else "NAME")


PLAIN_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*"


def plain_name() -> Reader:
    """A file or folder name: letters, digits and ``_ . + = -``, no path separator, not ``.`` or ``..``."""
    read_text = text()

    def read(value: Any) -> str:
        name = read_text(value)
        if not re.fullmatch(PLAIN_NAME, name) or ".." in name:
            raise SettingValueError(
                f"must be a plain name (letters, digits, _ . + = -; no '/', no '..'), got {name!r}; it names a folder "
                "under the output root, which --output-root sets")
        return name

    return _described(read, "NAME")


def existing_file(what: str) -> Reader:
    """A path to a file that exists."""

    def read(value: Any) -> str:
        path = Path(text()(value))
        if path.is_dir():
            raise SettingValueError(f"must be a file ({what}), but {path} is a directory")
        if not path.is_file():
            raise SettingValueError(f"must be an existing file ({what}); {path} does not exist")
        return str(path)

    return _described(read, "FILE")


def folder() -> Reader:
    """A path that is a directory or does not exist yet (it will be created), never a file."""

    def read(value: Any) -> str:
        path = Path(text()(value))
        if path.exists() and not path.is_dir():
            raise SettingValueError(f"must be a folder, but {path} is a file")
        return str(path)

    return _described(read, "DIR")


def _items(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _range_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" of at least {minimum}"
    if maximum is not None:
        return f" of at most {maximum}"
    return ""


def _bounds_text(minimum: float | None, maximum: float | None, above: float | None, below: float | None) -> str:
    parts = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else "",
             f"<= {maximum:g}" if maximum is not None else "", f"< {below:g}" if below is not None else ""]
    shown = [part for part in parts if part]
    return f" {' and '.join(shown)}" if shown else ""
