"""The Optuna samplers and pruners a study can use, by name: one entry each."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial

CMA_SIGMA0 = 0.1  # CMA-ES's first step, as a share of each parameter's (log) range


@dataclass(frozen=True)
class SamplerRecipe:
    """How to make one sampler: ``make(seed, n_startup_trials, constraints)``.

    ``constraints`` reads a finished trial's constraint values (feasible when all are <= 0). Optuna's own
    samplers read what each trial sets with ``Trial.set_constraint``; optuna-integration's BoTorch sampler
    still takes it as a function.
    """

    summary: str
    make: Callable[[int, int, Callable[[FrozenTrial], list[float]]], optuna.samplers.BaseSampler]


def _cmaes(seed: int) -> optuna.samplers.BaseSampler:
    """CMA-ES starting at the centre of the (log) ranges with first steps of ``CMA_SIGMA0``.

    Optuna 4.9 deprecated ``sigma0`` (it goes in 6.0, which pyproject excludes) and warns on every study; the
    step size is a measured choice here, so that one warning is silenced rather than shown to every user.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`sigma0` has been deprecated", category=FutureWarning)
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=0, sigma0=CMA_SIGMA0, warn_independent_sampling=False)


def _botorch(seed: int, startup: int, constraints: Callable[[FrozenTrial], list[float]]) -> optuna.samplers.BaseSampler:
    from optuna_integration import BoTorchSampler  # an optional heavy import: only when asked for

    return BoTorchSampler(seed=seed, n_startup_trials=startup, constraints_func=constraints)


SAMPLERS: dict[str, SamplerRecipe] = {
    "tpe": SamplerRecipe("multivariate TPE",
                         lambda seed, startup, _: optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)),
    "gp": SamplerRecipe("Gaussian-process BO", lambda seed, startup, _: optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)),
    "botorch": SamplerRecipe("BoTorch (qEI with constraints)", _botorch),
    "nsga2": SamplerRecipe("NSGA-II", lambda seed, _startup, _: optuna.samplers.NSGAIISampler(seed=seed)),
    "random": SamplerRecipe("random search", lambda seed, _startup, _: optuna.samplers.RandomSampler(seed=seed)),
    # CMA-ES starts at the centre of the (log) ranges: in the coefficient space, all ones (the projection). Its
    # first steps are a tenth of each range (Optuna's default, a sixth, jumped away from the projection's basin:
    # in benchmarks/sampler_ab.py no such step beat it in 30 trials on ResNet-20).
    "cmaes": SamplerRecipe("CMA-ES from the centre of the space", lambda seed, _startup, _: _cmaes(seed)),
}

PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(),
    "none": lambda: optuna.pruners.NopPruner(),
}


def sampler_names() -> tuple[str, ...]:
    return tuple(SAMPLERS)


def pruner_names() -> tuple[str, ...]:
    return tuple(PRUNERS)


def make_sampler(name: str, *, seed: int, n_startup_trials: int,
                 constraints: Callable[[FrozenTrial], list[float]]) -> optuna.samplers.BaseSampler:
    return SAMPLERS[name].make(seed, n_startup_trials, constraints)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    return PRUNERS[name]()
