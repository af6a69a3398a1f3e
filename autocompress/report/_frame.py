"""A finished (or running) study as tables: one row per trial, and its accuracy/size Pareto front."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autocompress.study import TrialRecord

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

# Columns every trials frame has, in this order; ``<layer>.sparsity`` and ``<layer>.bits`` follow.
BASE_COLUMNS: tuple[str, ...] = (
    "study",
    "number",
    "state",
    "strategy",
    "fidelity",
    "parent",
    "val_accuracy",
    "test_accuracy",
    "kl_to_baseline",
    "packed_bytes",
    "feasible",
    "compression_ratio",
    "mean_bits",
    "sparsity",
    "repaired",
    "wall_seconds",
    "datetime_start",
    "fail_reason",
)

_DTYPES: dict[str, str] = {
    "study": "object",
    "number": "int64",
    "state": "object",
    "strategy": "object",
    "fidelity": "object",
    "parent": "Int64",
    "val_accuracy": "float64",
    "test_accuracy": "float64",
    "kl_to_baseline": "float64",
    "packed_bytes": "Int64",
    "feasible": "boolean",
    "compression_ratio": "float64",
    "mean_bits": "float64",
    "sparsity": "float64",
    "repaired": "boolean",
    "wall_seconds": "float64",
    "datetime_start": "datetime64[ns]",
    "fail_reason": "object",
}


def trials_frame(study: optuna.Study, *companions: optuna.Study) -> pd.DataFrame:
    """One row per trial of ``study`` and of any ``companions`` (a kl-scored search's fine-tunes), with the columns
    of ``BASE_COLUMNS`` (``study`` names each row's study) and per-layer settings.

    ``fidelity`` is ``score`` for a trial scored without training, ``finetune`` and ``final`` for the fine-tuned
    ones, empty for a trial of a search scored by validation accuracy (and of older versions).
    ``parent`` is, for a companion study's trial (a re-score, a fine-tune, a race, the final fine-tune), the number of
    the main-study trial whose plan it measured; empty elsewhere.
    ``val_accuracy`` is the measured validation accuracy: the ``val_accuracy`` user attribute when the
    search stored it, else the objective value of a COMPLETE trial, else the last intermediate value of a
    PRUNED trial. It is NaN for a trial that was never evaluated, including an infeasible COMPLETE trial
    whose objective is the placeholder 0.0 (``feasible`` False and no ``val_accuracy`` attribute), so such
    a trial never reaches the Pareto front. After the base columns come ``<layer>.sparsity`` and
    ``<layer>.bits`` for every layer named in any trial's ``plan``, in the order layers first appear.
    """
    pairs = [(one.study_name, trial) for one in (study, *companions) for trial in one.get_trials(deepcopy=False)]
    return frame_from_trials([trial for _, trial in pairs], studies=[name for name, _ in pairs])


def frame_from_trials(trials: Iterable[FrozenTrial], *, studies: Sequence[str] | None = None) -> pd.DataFrame:
    """``trials_frame`` for a plain sequence of frozen trials (e.g. filtered, or from several studies)."""
    trials = list(trials)
    layers = _layer_names(trials)
    names = list(studies) if studies is not None else [None] * len(trials)
    rows = [{"study": name, **_trial_row(trial, layers)} for name, trial in zip(names, trials)]
    columns = [*BASE_COLUMNS, *(f"{layer}.{field}" for layer in layers for field in ("sparsity", "bits"))]
    frame = pd.DataFrame(rows, columns=columns)
    dtypes = dict(_DTYPES)
    dtypes.update({f"{layer}.sparsity": "float64" for layer in layers})
    dtypes.update({f"{layer}.bits": "Int64" for layer in layers})
    return frame.astype(dtypes)


def pareto_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` not dominated on (``val_accuracy`` max, ``packed_bytes`` min), sorted by size.

    Only COMPLETE trials with both numbers take part. A row is dominated when another row is at least as
    accurate and at most as large, and strictly better in one of the two; rows with identical numbers
    are all kept. Every column of ``frame`` (``feasible`` included) is kept; the index is reset.
    """
    candidates = frame[
        (frame["state"] == "COMPLETE") & frame["val_accuracy"].notna() & frame["packed_bytes"].notna()
    ]
    if candidates.empty:
        return candidates.reset_index(drop=True)
    accuracy = candidates["val_accuracy"].to_numpy(dtype=float)
    size = candidates["packed_bytes"].to_numpy(dtype=float)
    # dominates[j, i]: row j dominates row i.
    no_worse = (accuracy[:, None] >= accuracy[None, :]) & (size[:, None] <= size[None, :])
    better = (accuracy[:, None] > accuracy[None, :]) | (size[:, None] < size[None, :])
    dominated = (no_worse & better).any(axis=0)
    front = candidates[~dominated]
    return front.sort_values(["packed_bytes", "val_accuracy", "number"], ascending=[True, False, True]).reset_index(
        drop=True
    )


def best_feasible(frame: pd.DataFrame) -> pd.Series | None:
    """The COMPLETE feasible row with the highest ``val_accuracy`` (ties: smaller, then earlier), or None."""
    ranked = feasible_ranking(frame)
    return None if ranked.empty else ranked.iloc[0]


def feasible_ranking(frame: pd.DataFrame) -> pd.DataFrame:
    """COMPLETE, feasible, evaluated rows, best first (accuracy down, then bytes up, then trial number)."""
    feasible = frame[
        (frame["state"] == "COMPLETE") & frame["feasible"].fillna(False).astype(bool) & frame["val_accuracy"].notna()
    ]
    return feasible.sort_values(["val_accuracy", "packed_bytes", "number"], ascending=[False, True, True])


def _layer_names(trials: Sequence[FrozenTrial]) -> list[str]:
    names: dict[str, None] = {}
    for trial in trials:
        plan = TrialRecord.of(trial).plan
        if isinstance(plan, dict):
            names.update(dict.fromkeys(str(name) for name in plan))
    return list(names)


def _trial_row(trial: FrozenTrial, layers: Sequence[str]) -> dict[str, Any]:
    record = TrialRecord.of(trial)
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "strategy": record.strategy,
        "fidelity": record.fidelity,
        "parent": _optional_int(record.parent),
        "val_accuracy": _measured_accuracy(trial, record),
        "test_accuracy": _optional_float(record.test_accuracy),
        "kl_to_baseline": _optional_float(record.kl_to_baseline),
        "packed_bytes": _optional_int(record.packed_bytes),
        "feasible": _optional_bool(record.feasible),
        "compression_ratio": _optional_float(record.compression_ratio),
        "mean_bits": _optional_float(record.mean_bits),
        "sparsity": _optional_float(record.sparsity),
        "repaired": _optional_bool(record.repaired),
        "wall_seconds": _optional_float(record.wall_seconds),
        "datetime_start": trial.datetime_start,
        "fail_reason": record.fail_reason,
    }
    plan = record.plan if isinstance(record.plan, dict) else {}
    for layer in layers:
        setting = plan.get(layer) or {}
        row[f"{layer}.sparsity"] = _optional_float(setting.get("sparsity"))
        row[f"{layer}.bits"] = _optional_int(setting.get("bits"))
    return row


def _measured_accuracy(trial: FrozenTrial, record: TrialRecord) -> float:
    stored = _optional_float(record.val_accuracy)
    if not math.isnan(stored):
        return stored
    state = trial.state.name
    if record.fidelity is not None:  # a kl-scored search's trial: its value is a KL, not an accuracy
        return math.nan
    if state == "COMPLETE" and trial.values and record.feasible is not False:
        return float(trial.values[0])
    if state == "PRUNED" and trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return math.nan


def _optional_float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) else math.nan


def _optional_int(value: Any) -> int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    number = _optional_float(value)
    return int(number) if math.isfinite(number) else None


def _optional_bool(value: Any) -> bool | None:
    return bool(value) if isinstance(value, (bool, np.bool_)) else None
