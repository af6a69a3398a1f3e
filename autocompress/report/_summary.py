"""A short plain-text summary of a study for the terminal."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from autocompress.report._frame import feasible_ranking
from autocompress.report._plots import BaselineAccuracy, baseline_val
from autocompress.units import format_size

_STATE_ORDER = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def summary_table(
    frame: pd.DataFrame, target_bytes: int | None, baseline_accuracy: BaselineAccuracy = None, *, top: int = 5
) -> str:
    """Trials by state, how many fit the target, the best feasible trial and the ``top`` feasible trials.

    ``baseline_accuracy`` is a float or ``{"val": ..., "test": ...}``; when given, the best trial's
    accuracy is also shown as a difference in percentage points from the baseline's validation accuracy.
    """
    lines: list[str] = []
    baseline = baseline_val(baseline_accuracy)
    target = format_size(int(target_bytes)) if target_bytes is not None else "not set"
    lines.append(f"target size:   {target}" + (f"   baseline val accuracy: {baseline:.2%}" if baseline is not None else ""))
    lines.append(f"trials:        {len(frame)}" + (f" ({_states(frame)})" if len(frame) else ""))
    sized = frame["packed_bytes"].notna()
    feasible = frame["feasible"].fillna(False).astype(bool)
    repaired = int(frame["repaired"].fillna(False).astype(bool).sum())
    lines.append(
        f"feasible:      {int(feasible.sum())} of {int(sized.sum())} sized"
        f" ({int((feasible & (frame['state'] == 'COMPLETE')).sum())} complete); repaired to fit: {repaired}"
    )
    ranking = feasible_ranking(frame)
    if ranking.empty:
        lines.append("best feasible: none (no COMPLETE trial fits the target yet)")
        return "\n".join(lines)
    best = ranking.iloc[0]
    delta = f" ({(best['val_accuracy'] - baseline) * 100:+.2f} pt vs baseline)" if baseline is not None else ""
    lines.append(
        f"best feasible: trial #{int(best['number'])}  val acc {best['val_accuracy']:.2%}{delta}"
        f"  {int(best['packed_bytes']):,} B  ratio {_fmt(best['compression_ratio'], '{:.1f}x')}"
        f"  mean bits {_fmt(best['mean_bits'], '{:.2f}')}  sparsity {_fmt(best['sparsity'], '{:.1%}')}"
        f"  [{_strategy(best['strategy'])}]"
    )
    lines.append("")
    lines.append(f"top {min(top, len(ranking))} feasible trials:")
    header = ("trial", "strategy", "val acc", "bytes", "ratio", "mean bits", "sparsity")
    rows = [
        (
            f"#{int(row['number'])}",
            _strategy(row["strategy"]),
            f"{row['val_accuracy']:.2%}",
            f"{int(row['packed_bytes']):,}",
            _fmt(row["compression_ratio"], "{:.1f}x"),
            _fmt(row["mean_bits"], "{:.2f}"),
            _fmt(row["sparsity"], "{:.1%}"),
        )
        for _, row in ranking.head(top).iterrows()
    ]
    lines.extend(_aligned([header, *rows], left=(0, 1)))
    return "\n".join(lines)


def _states(frame: pd.DataFrame) -> str:
    counts = frame["state"].value_counts()
    order = [state for state in _STATE_ORDER if state in counts] + sorted(set(counts.index) - set(_STATE_ORDER))
    return ", ".join(f"{counts[state]} {state.lower()}" for state in order)


def _strategy(value: object) -> str:
    return value if isinstance(value, str) else "?"


def _fmt(value: object, pattern: str) -> str:
    return "-" if value is None or pd.isna(value) else pattern.format(value)


def _aligned(rows: Sequence[Sequence[str]], *, left: Sequence[int]) -> list[str]:
    """Rows as text columns two spaces apart; the columns in ``left`` left-aligned, the others right."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) if i in left else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines
