"""Every way of choosing a plan, one module each, and their registry: the joint searches (bo, random, admm,
bayesbits), the single allocations (uniform, projection) and the naive baselines of ``compare`` (prune then
quantize, quantize then prune, which ``search --mode`` does not offer); with them, the checks of the settings
that need the registries (:func:`check_settings`).

A new strategy is one more module here, subclassing :class:`autocompress.search.Strategy`, and one line below
(or :func:`register_strategy` from your own code). A new trial score is :func:`register_scoring`.
"""

from __future__ import annotations

from autocompress.strategies._admm import AdmmStrategy
from autocompress.strategies._admm_train import AdmmSchedule, AdmmState
from autocompress.strategies._bayesbits import BayesBitsStrategy
from autocompress.strategies._bo import BoStrategy, RandomStrategy
from autocompress.strategies._checks import changed_kept_settings, check_settings, for_mode, objective_of, reads, registry_of
from autocompress.strategies._front import FRONT_SUFFIX
from autocompress.strategies._naive import NaiveRun, PruneThenQuantize, QuantizeThenPrune
from autocompress.strategies._registry import get_strategy, register_strategy, strategy_names
from autocompress.strategies._scoring import SCORINGS, CheapKL, TrialScoring, register_scoring
from autocompress.strategies._single import ProjectionStrategy, UniformStrategy, projection_plan, uniform_plan

for _strategy in (BoStrategy(), RandomStrategy(), AdmmStrategy(), BayesBitsStrategy(), UniformStrategy(),
                  ProjectionStrategy(), PruneThenQuantize(), QuantizeThenPrune()):
    register_strategy(_strategy)

__all__ = [
    "FRONT_SUFFIX",
    "SCORINGS",
    "AdmmSchedule",
    "AdmmState",
    "CheapKL",
    "NaiveRun",
    "TrialScoring",
    "changed_kept_settings",
    "check_settings",
    "for_mode",
    "get_strategy",
    "objective_of",
    "projection_plan",
    "reads",
    "register_scoring",
    "register_strategy",
    "registry_of",
    "strategy_names",
    "uniform_plan",
]
