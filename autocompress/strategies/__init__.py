"""The built-in ways of choosing a plan, one module each; importing this package registers them.

``search --mode NAME`` and ``compare --strategies NAME,...`` find them in the registry
(:func:`autocompress.search.get_strategy`). A new strategy is one more module here: subclass
:class:`autocompress.search.Strategy` and call :func:`autocompress.search.register_strategy`.
"""

from __future__ import annotations

from autocompress.strategies._admm import AdmmStrategy
from autocompress.strategies._admm_train import AdmmSchedule, AdmmState, admm_train_
from autocompress.strategies._bayesbits import BayesBitsStrategy, GateSchedule, train_gates_
from autocompress.strategies._bo import BoStrategy, RandomStrategy
from autocompress.strategies._front import FRONT_SUFFIX, run_front
from autocompress.strategies._proposals import PROPOSERS, Proposer, proposer_for, warm_start_plans
from autocompress.strategies._scoring import SCORINGS, CheapKL, TrialScoring, register_scoring
from autocompress.strategies._single import ProjectionStrategy, UniformStrategy, projection_plan, uniform_plan

__all__ = [
    "FRONT_SUFFIX",
    "PROPOSERS",
    "SCORINGS",
    "AdmmSchedule",
    "AdmmState",
    "AdmmStrategy",
    "BayesBitsStrategy",
    "BoStrategy",
    "CheapKL",
    "GateSchedule",
    "ProjectionStrategy",
    "Proposer",
    "RandomStrategy",
    "TrialScoring",
    "UniformStrategy",
    "admm_train_",
    "projection_plan",
    "proposer_for",
    "register_scoring",
    "run_front",
    "train_gates_",
    "uniform_plan",
    "warm_start_plans",
]
