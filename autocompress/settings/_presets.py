"""Presets (YAML files of settings) and the loading of settings from a preset, ``--set`` assignments and flags,
with the source of a bad value (the flag, or the preset's file and line) in its one-line error."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autocompress.errors import AutocompressError
from autocompress.settings._search import SETTING_OPTIONS, SearchSettings
from autocompress.settings.options import SettingError

_ALIASES = {
    **{declared.flag.lstrip("-").replace("-", "_"): name for name, declared in SETTING_OPTIONS.items() if declared.flag},
    "target_bytes": "target_bytes",
    "timeout": "timeout_seconds",
}


@dataclass(frozen=True)
class Source:
    """Where a value came from, for error messages: a flag, or a preset's file and line."""

    flag: str | None = None
    preset: Path | None = None
    line: int | None = None
    key: str | None = None

    def describe(self, value: Any) -> str:
        if self.flag is not None and self.flag.endswith("="):  # --set NAME=VALUE
            return f"{self.flag}{value}"
        if self.flag is not None:
            shown = "" if isinstance(value, bool) else f" {value}"
            return f"{self.flag}{shown}"
        return f"{self.preset}, line {self.line} ({self.key})"


def load_settings(preset: Path | str | None, flags: dict[str, Any], assignments: dict[str, str] | None = None, *,
                  check: Callable[[SearchSettings], None] | None = None) -> SearchSettings:
    """Preset values (if any), then ``--set NAME=VALUE`` assignments, then every flag value that is not None,
    checked together; then ``check`` (such as :func:`autocompress.strategies.check_settings`, which knows the
    registries), whose :class:`SettingError` is told where its value came from too.

    ``flags`` maps setting names (or their flag-style aliases) to raw values. Any problem is one
    :class:`AutocompressError` naming the setting, where it came from, and what is allowed."""
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    if preset is not None:
        for key, (value, line) in read_preset(Path(preset)).items():
            name = _setting_name(key, Path(preset), line)
            values[name], sources[name] = value, Source(preset=Path(preset), line=line, key=key)
    for key, value in (assignments or {}).items():
        name = _ALIASES.get(key, key)
        if name not in SETTING_OPTIONS:
            close = difflib.get_close_matches(key, sorted(SETTING_OPTIONS), n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else "; docs/reference.md lists the settings"
            raise AutocompressError(f"--set {key}={value}: unknown setting {key!r}{hint}")
        values[name], sources[name] = value, Source(flag=f"--set {key}=")
    for key, value in flags.items():
        if value is None:
            continue
        name = _ALIASES.get(key, key)
        if name not in SETTING_OPTIONS:
            raise AutocompressError(f"unknown setting {key!r}")
        values[name], sources[name] = value, Source(flag=SETTING_OPTIONS[name].flag or f"{name}=")
    if "target_bytes" not in values:
        if values.get("targets"):
            values["target_bytes"] = _largest_target(values, sources)
        else:
            raise AutocompressError("no target: pass --target-size (e.g. 50KB, 1MB) or set target_size in the preset")
    try:
        settings = SearchSettings(**values)
        if check is not None:
            check(settings)
        return settings
    except SettingError as error:
        raise AutocompressError(located(error, values, sources)) from None


def located(error: SettingError, values: dict[str, Any], sources: dict[str, Source]) -> str:
    """The error with the source of the first of its fields that was given (flag or preset line)."""
    for name in error.fields:
        if name in sources:
            return f"{sources[name].describe(values[name])}: {error.problem}"
    return str(error)


def _largest_target(values: dict[str, Any], sources: dict[str, Source]) -> Any:
    try:
        return max(SETTING_OPTIONS["targets"].read(values["targets"]))
    except ValueError as error:
        raise AutocompressError(f"{sources['targets'].describe(values['targets'])}: targets {error}") from None


REMOVED_SETTINGS = ("finetune_projection", "finetune_seeds", "finetune_distill", "race_top", "race_epochs",
                    "score_temperature", "score_steps", "rescore_top", "rescore_images", "coefficient_groups")
"""Settings of earlier versions whose A/B tied or lost (docs/experiments/): a preset that still gives one is told so."""


def _setting_name(key: str, preset: Path, line: int) -> str:
    name = _ALIASES.get(key, key)
    if name in SETTING_OPTIONS:
        return name
    if name in REMOVED_SETTINGS:
        raise AutocompressError(f"{preset}, line {line}: setting {key!r} was removed on 2026-12-07 (it tied or lost its "
                                "A/B: docs/experiments/); delete the line")
    known = sorted(set(SETTING_OPTIONS) | set(_ALIASES))
    close = difflib.get_close_matches(key, known, n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; the settings are: {', '.join(sorted(SETTING_OPTIONS))}"
    raise AutocompressError(f"{preset}, line {line}: unknown setting {key!r}{hint}")


def read_preset(path: Path) -> dict[str, tuple[Any, int]]:
    """The preset's settings with the line each is on; one clear error for a missing or malformed file."""
    if path.is_dir():
        raise AutocompressError(f"preset {path} is a directory; give a YAML file such as studies/resnet20-50KB.yaml")
    if not path.is_file():
        raise AutocompressError(f"preset {path} does not exist; the presets are in studies/*.yaml")
    content = path.read_text(encoding="utf-8", errors="replace")
    try:
        node = yaml.compose(content, Loader=yaml.SafeLoader)
        document = yaml.safe_load(content)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise AutocompressError(f"{path}{where}: not valid YAML ({reason}); fix the file and run again") from None
    if document is None:
        return {}
    if not isinstance(document, dict) or not isinstance(node, yaml.MappingNode):
        raise AutocompressError(f"{path}: a preset is a mapping of settings (key: value per line), got "
                                f"{type(document).__name__}")
    lines: dict[str, int] = {}
    for key, _ in node.value:
        if str(key.value) in lines:
            raise AutocompressError(f"{path}, line {key.start_mark.line + 1}: setting {str(key.value)!r} is given twice "
                                    f"(first on line {lines[str(key.value)]}); keep one")
        lines[str(key.value)] = key.start_mark.line + 1
    return {str(key): (value, lines.get(str(key), 1)) for key, value in document.items()}
