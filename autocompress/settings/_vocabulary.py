"""The plain facts the settings are checked against and the layers above share: bit limits, number formats,
the kinds of search space, the trial scores and the rules on bounds. No torch, no Optuna."""

from __future__ import annotations

from dataclasses import dataclass

MIN_BITS, MAX_BITS = 1, 8

PRECISIONS = ("auto", "fp32", "bf16")
"""Number formats of training steps: ``auto`` is bf16 where the device computes it natively, fp32 elsewhere."""

SPACES: tuple[str, ...] = ("absolute", "relative", "coefficients")
"""What a BO sampler searches: absolute per-layer values, shifts around the projection plan, or per-group
coefficients that the projection turns into a plan on the exact budget."""


@dataclass(frozen=True)
class TrialObjective:
    """What a study's trials are scored by: the metric's name in the storage and its direction."""

    metric: str
    direction: str  # "maximize" or "minimize"
    summary: str


TRIAL_SCORES: dict[str, TrialObjective] = {
    "val_accuracy": TrialObjective("val_accuracy", "maximize",
                                   "validation top-1 after a short in-parallel pruning-quantization fine-tune per trial"),
    "kl": TrialObjective("kl_to_baseline", "minimize",
                         "KL(baseline || compressed) on fixed training images after BN re-estimation, no training; "
                         "the best few plans are then fine-tuned briefly and scored again"),
}
"""The trial scores by name; ``autocompress.strategies.register_scoring`` adds one."""


def kl_scored(trial_score: str) -> bool:
    """Whether ``trial_score`` is the KL score or a registered variant of it (same metric)."""
    return trial_score in TRIAL_SCORES and TRIAL_SCORES[trial_score].metric == TRIAL_SCORES["kl"].metric


def bounds_problem(sparsity_min: float, sparsity_max: float, bits_min: int, bits_max: int) -> str | None:
    """What is wrong with the per-layer bounds (shared by every layer), or None."""
    if not 0.0 <= sparsity_min <= sparsity_max < 1.0:
        return (f"sparsity bounds must satisfy 0 <= sparsity_min <= sparsity_max < 1, got {sparsity_min:g} and "
                f"{sparsity_max:g} (sparsity is the share of a layer's weights that are pruned)")
    if not MIN_BITS <= bits_min <= bits_max <= MAX_BITS:
        return f"bit bounds must satisfy {MIN_BITS} <= bits_min <= bits_max <= {MAX_BITS}, got {bits_min} and {bits_max}"
    return None


def distillation_problem(temperature: float, weight: float) -> str | None:
    """What is wrong with a distillation temperature and weight, or None."""
    if not temperature > 0:
        return f"the distillation temperature must be positive, got {temperature:g}"
    if not 0 <= weight <= 1:
        return f"the distillation weight (share of the teacher term) must be in [0, 1], got {weight:g}"
    return None
