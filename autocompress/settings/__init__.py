"""What a search is asked to do: every setting declared once (flag, help, rule, the mode it belongs to), the
presets that hold them, and the plain facts they are checked against. Imports no torch and no Optuna, so a
preset is read and checked in milliseconds; the names that only a registry knows (modes, quantizers,
samplers...) are checked by :func:`autocompress.strategies.check_settings`.
"""

from __future__ import annotations

from autocompress.settings._presets import REMOVED_SETTINGS, load_settings, read_preset
from autocompress.settings._search import SCOPES, SETTING_OPTIONS, SearchSettings
from autocompress.settings._vocabulary import (
    MAX_BITS,
    MIN_BITS,
    PRECISIONS,
    SPACES,
    TRIAL_SCORES,
    TrialObjective,
    bounds_problem,
    distillation_problem,
    kl_scored,
)
from autocompress.settings.options import Option, SettingError, default_of, options_of

__all__ = [
    "MAX_BITS",
    "MIN_BITS",
    "PRECISIONS",
    "REMOVED_SETTINGS",
    "SCOPES",
    "SETTING_OPTIONS",
    "SPACES",
    "TRIAL_SCORES",
    "Option",
    "SearchSettings",
    "SettingError",
    "TrialObjective",
    "bounds_problem",
    "default_of",
    "distillation_problem",
    "kl_scored",
    "load_settings",
    "options_of",
    "read_preset",
]
