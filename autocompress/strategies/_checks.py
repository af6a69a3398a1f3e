"""The checks of the settings that need the registries, and the questions about settings that depend on the
mode: which settings a mode reads, what its trials are scored by, the same settings for another mode.

The settings package checks every value's form and the rules between values without importing any registry;
:func:`check_settings` adds what only the registries know: the names (modes, quantizers, samplers, pruners,
datasets), each mode's own rule, and the settings that belong to another mode than the one chosen."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from autocompress.data import dataset_names
from autocompress.quantizers import quantizer_names
from autocompress.settings import (
    SCOPES,
    SETTING_OPTIONS,
    TRIAL_SCORES,
    Option,
    SearchSettings,
    SettingError,
    TrialObjective,
    default_of,
)
from autocompress.strategies._registry import get_strategy, strategy_names
from autocompress.study import pruner_names, sampler_names

REGISTRIES: dict[str, Callable[[], Sequence[str]]] = {
    "modes": strategy_names,
    "quantizers": quantizer_names,
    "samplers": sampler_names,
    "pruners": pruner_names,
    "datasets": dataset_names,
}
"""The names each registry offers, by the name the settings' ``registered`` readers give."""


def registry_of(declared: Option, *, search: bool = False) -> Callable[[], Sequence[str]] | None:
    """The names a setting declared so may take when a registry holds them (None: it is no registry's);
    ``search``: the modes that ``search --mode`` offers (not the baselines of ``compare``)."""
    registry = getattr(declared.read, "registry", None)
    if registry is None:
        return None
    if registry == "modes" and search:
        return lambda: strategy_names(searchable=True)
    return REGISTRIES[registry]


def check_settings(settings: SearchSettings, *, search: bool = False, shared: bool = False) -> None:
    """Raise :class:`SettingError` (naming the setting) for a name no registry holds, a mode's own rule broken,
    or a setting given a value for a mode that does not read it. ``search``: the mode must be one ``search --mode``
    offers; ``shared``: the shared settings of several modes (``compare``), where a setting of any mode is allowed."""
    values = settings.to_dict()
    if search and settings.mode in strategy_names() and settings.mode not in strategy_names(searchable=True):
        raise SettingError(["mode"], f"{settings.mode} is a baseline of compare (autocompress compare --strategies "
                                     f"{settings.mode}), not a search mode; search offers "
                                     f"{', '.join(strategy_names(searchable=True))}", subject="mode")
    for name, declared in SETTING_OPTIONS.items():
        names = registry_of(declared, search=search)
        if names is not None:
            _check_names(name, values[name], tuple(names()))
    for fields, problem in _mode_rules(settings):
        if problem:
            raise SettingError(fields, problem)
    if not shared:
        for name, problem in _scope_problems(settings):
            raise SettingError([name], problem)


def _check_names(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    given = value if isinstance(value, list) else [value]
    unknown = [item for item in given if item not in allowed]
    if unknown and isinstance(value, list):
        raise SettingError([name], f"must list some of {', '.join(allowed)} (comma-separated, each once), got "
                                   f"{','.join(value)!r}", subject=name)
    if unknown:
        raise SettingError([name], f"must be one of {', '.join(allowed)}, got {value!r}", subject=name)


def _mode_rules(settings: SearchSettings) -> list[tuple[tuple[str, ...], str | None]]:
    """The rules that tie a setting to what the mode can do, and the mode's own (``Strategy.settings_problem``)."""
    strategy = get_strategy(settings.mode)
    sweeping = " or ".join(name for name in strategy_names() if get_strategy(name).sweeps_targets)
    parallel = " or ".join(name for name in strategy_names() if get_strategy(name).runs_side_by_side)
    return [
        (("targets", "mode"), None if settings.targets is None or strategy.sweeps_targets else
         f"targets (a sweep of targets) needs mode {sweeping}; the other modes have one target (target_size)"),
        (("n_jobs", "worker", "mode"), None if strategy.runs_side_by_side or (settings.n_jobs == 1 and not settings.worker) else
         f"n_jobs and worker apply to mode {parallel}, where trials can run side by side; mode {settings.mode} runs in one process"),
        strategy.settings_problem(settings) or ((), None),
    ]


def _scope_applies(scope: str, mode: str, values: dict[str, Any]) -> bool:
    return SCOPES[scope][1](get_strategy(mode).scopes, values)


def _scope_problems(settings: SearchSettings) -> list[tuple[str, str]]:
    """Settings given a value other than their default that the run's mode (or trial score) does not read."""
    values = settings.to_dict()
    problems = []
    for name, declared in SETTING_OPTIONS.items():
        if declared.scope is None or _scope_applies(declared.scope, settings.mode, values):
            continue
        if values[name] != default_of(SearchSettings, name):
            score = f" with trial_score {settings.trial_score}" if declared.scope in ("kl", "val_accuracy") else ""
            problems.append((name, f"{name} belongs to {SCOPES[declared.scope][0]}; this search runs mode "
                                   f"{settings.mode}{score}: leave it out, or run that mode"))
    return problems


def reads(settings: SearchSettings, scope: str) -> bool:
    """Whether a run of these settings reads the settings of ``scope`` (``bo``, ``kl``, ``admm``... see ``SCOPES``)."""
    return _scope_applies(scope, settings.mode, settings.to_dict())


def objective_of(settings: SearchSettings) -> TrialObjective:
    """What the run's trials are scored by (metric name and direction): ``trial_score`` in the modes of the
    study (bo, random); the other modes' trials are scored by validation accuracy."""
    return TRIAL_SCORES[settings.trial_score if reads(settings, "bo") else "val_accuracy"]


def for_mode(settings: SearchSettings, mode: str, **changes: Any) -> SearchSettings:
    """These settings for a run of ``mode``: every setting that mode does not read goes back to its default
    (``compare`` runs each strategy from one set of settings)."""
    values = {**settings.to_dict(), "mode": mode, **changes}
    for name, declared in SETTING_OPTIONS.items():
        if declared.scope is not None and name not in changes and not _scope_applies(declared.scope, mode, values):
            values[name] = default_of(SearchSettings, name)
    return SearchSettings(**values)


def changed_kept_settings(settings: SearchSettings, recorded: dict[str, Any]) -> list[str]:
    """The settings that make a study what it is (declared ``kept``) and differ from those a study ``recorded``
    when it was created; a setting the record lacks (an older version's), and one this run's mode does not read
    (the study's trials of another mode), are not compared."""
    today = settings.to_dict()
    return [name for name, declared in SETTING_OPTIONS.items()
            if declared.kept and (declared.scope is None or reads(settings, declared.scope)) and name in recorded
            and _comparable(recorded[name]) != _comparable(today[name])]


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value

