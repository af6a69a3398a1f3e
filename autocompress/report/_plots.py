"""Accuracy against packed size: a PNG (matplotlib, no display needed) and a standalone HTML (plotly).

Both plots show the same things, read from a trials frame (``trials_frame``): COMPLETE feasible trials,
COMPLETE trials over the budget, PRUNED trials faintly at their last intermediate accuracy (FAIL and
RUNNING trials, which have no accuracy, are left out), the Pareto front as a step line, the target
size as a dashed vertical line, the best feasible trial as a star, and the baseline accuracy as a
dotted horizontal line when it is known. Sizes are drawn in KB (1 KB = 1000 bytes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from autocompress.files import atomic_path
from autocompress.report._frame import best_feasible, pareto_frame
from autocompress.units import format_size

_FEASIBLE_COLOUR = "#1f77b4"
_OVER_BUDGET_COLOUR = "#ff7f0e"
_PRUNED_COLOUR = "#9e9e9e"
_FRONT_COLOUR = "#2ca02c"
_TARGET_COLOUR = "#d62728"
_BEST_COLOUR = "#ffbf00"

BaselineAccuracy = Mapping[str, float] | float | None


def plot_pareto_png(
    frame: pd.DataFrame,
    target_bytes: int | None,
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    baseline_accuracy: BaselineAccuracy = None,
) -> Path:
    """Draw validation accuracy against packed size into a PNG at ``path`` (written atomically); return it."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    groups = _groups(frame)
    figure = Figure(figsize=(8.0, 5.2), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    styles: dict[str, tuple[str, dict[str, Any]]] = {
        "pruned": ("pruned", {"s": 14, "c": _PRUNED_COLOUR, "alpha": 0.35}),
        "over_budget": ("over budget", {"s": 30, "marker": "x", "c": _OVER_BUDGET_COLOUR}),
        "feasible": ("feasible", {"s": 26, "c": _FEASIBLE_COLOUR, "alpha": 0.85}),
    }
    for key, (name, style) in styles.items():
        rows = groups[key]
        if not rows.empty:
            axes.scatter(_kb(rows), rows["val_accuracy"], label=f"{name} ({len(rows)})", **style)
    front = groups["front"]
    if not front.empty:
        axes.step(
            _kb(front), front["val_accuracy"], where="post", color=_FRONT_COLOUR, linewidth=1.6, label="Pareto front", zorder=3
        )
    baseline = baseline_val(baseline_accuracy)
    if baseline is not None:
        axes.axhline(baseline, color="black", linestyle=":", linewidth=1.0, label=f"baseline {baseline:.2%}")
    if target_bytes is not None:
        target_kb = target_bytes / 1000
        axes.axvline(target_kb, color=_TARGET_COLOUR, linestyle="--", linewidth=1.4, label=f"target {target_kb:,.1f} KB")
        axes.annotate(
            f"target\n{target_kb:,.1f} KB",
            xy=(target_kb, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -4),
            textcoords="offset points",
            va="top",
            ha="left",
            color=_TARGET_COLOUR,
            fontsize=9,
        )
    best = groups["best"]
    if best is not None:
        axes.scatter(
            [best["packed_bytes"] / 1000], [best["val_accuracy"]], s=220, marker="*", c=_BEST_COLOUR,
            edgecolors="black", linewidths=0.8, zorder=5, label=f"best feasible: trial {int(best['number'])}",
        )
        axes.annotate(
            f"#{int(best['number'])}  {best['val_accuracy']:.2%}\n{int(best['packed_bytes']):,} B",
            xy=(best["packed_bytes"] / 1000, best["val_accuracy"]),
            xytext=(-10, -10),
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize=9,
            bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": _BEST_COLOUR, "alpha": 0.9},
            zorder=6,
        )
    if all(groups[key].empty for key in styles):
        axes.text(0.5, 0.5, "no evaluated trials yet", transform=axes.transAxes, ha="center", va="center", color="grey")
    axes.set_xlabel("packed size (KB, 1 KB = 1000 bytes)")
    axes.set_ylabel("validation accuracy")
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    axes.grid(True, alpha=0.3)
    axes.set_title(_title(model, target_bytes))
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower right", fontsize=8, framealpha=0.9)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    return Path(path)


def plot_pareto_html(
    frame: pd.DataFrame,
    target_bytes: int | None,
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    baseline_accuracy: BaselineAccuracy = None,
) -> Path:
    """The same plot as ``plot_pareto_png``, interactive, as one self-contained HTML file (works offline).

    Hovering a point shows its trial number, accuracy, packed bytes, mean bits, sparsity and strategy.
    The data are written as plain JSON lists, so the file can be searched for a trial (``"trial #12"``).
    """
    import plotly.graph_objects as go

    groups = _groups(frame)
    figure = go.Figure()
    styles = {
        "pruned": ("pruned", {"color": _PRUNED_COLOUR, "size": 6, "opacity": 0.4}),
        "over_budget": ("over budget", {"color": _OVER_BUDGET_COLOUR, "size": 8, "symbol": "x"}),
        "feasible": ("feasible", {"color": _FEASIBLE_COLOUR, "size": 8, "opacity": 0.85}),
    }
    for key, (name, marker) in styles.items():
        rows = groups[key]
        if not rows.empty:
            trace = go.Scatter(name=f"{name} ({len(rows)})", mode="markers", marker=marker, **_hover_data(rows))
            figure.add_trace(trace)
    front = groups["front"]
    if not front.empty:
        line = {"color": _FRONT_COLOUR, "shape": "hv", "width": 2}
        figure.add_trace(go.Scatter(name="Pareto front", mode="lines", line=line, **_hover_data(front)))
    best = groups["best"]
    if best is not None:
        figure.add_trace(
            go.Scatter(
                name=f"best feasible: trial {int(best['number'])}",
                mode="markers",
                marker={"color": _BEST_COLOUR, "size": 18, "symbol": "star", "line": {"color": "black", "width": 1}},
                **_hover_data(best.to_frame().T),
            )
        )
    baseline = baseline_val(baseline_accuracy)
    if baseline is not None:
        figure.add_hline(y=baseline, line_dash="dot", line_color="black", annotation_text=f"baseline {baseline:.2%}")
    if target_bytes is not None:
        figure.add_vline(
            x=target_bytes / 1000, line_dash="dash", line_color=_TARGET_COLOUR,
            annotation_text=f"target {target_bytes / 1000:,.1f} KB", annotation_font_color=_TARGET_COLOUR,
        )
    figure.update_layout(
        title=_title(model, target_bytes),
        xaxis_title="packed size (KB, 1 KB = 1000 bytes)",
        yaxis_title="validation accuracy",
        yaxis_tickformat=".1%",
        template="plotly_white",
        legend={"yanchor": "bottom", "y": 0.02, "xanchor": "right", "x": 0.98},
    )
    with atomic_path(path) as temporary:
        figure.write_html(temporary, include_plotlyjs=True, full_html=True)
    return Path(path)


def _groups(frame: pd.DataFrame) -> dict[str, Any]:
    plotted = frame[frame["val_accuracy"].notna() & frame["packed_bytes"].notna()]
    complete = plotted["state"] == "COMPLETE"
    feasible = plotted["feasible"].fillna(False).astype(bool)
    return {
        "pruned": plotted[plotted["state"] == "PRUNED"],
        "feasible": plotted[complete & feasible],
        "over_budget": plotted[complete & ~feasible],
        "front": pareto_frame(frame),
        "best": best_feasible(frame),
    }


def _hover_data(rows: pd.DataFrame) -> dict[str, Any]:
    """x, y, text and customdata as Python lists (plotly would otherwise base64-encode numpy arrays)."""
    customdata = [
        [
            int(row.packed_bytes),
            _or_none(row.mean_bits),
            _or_none(row.sparsity),
            _or_none(row.compression_ratio),
            row.strategy if isinstance(row.strategy, str) else "?",
        ]
        for row in rows.itertuples(index=False)
    ]
    return {
        "x": [int(size) / 1000 for size in rows["packed_bytes"]],
        "y": [float(accuracy) for accuracy in rows["val_accuracy"]],
        "text": [f"trial #{int(number)}" for number in rows["number"]],
        "customdata": customdata,
        "hovertemplate": (
            "%{text}<br>val accuracy %{y:.2%}<br>%{customdata[0]:,} bytes (%{customdata[3]:.1f}x)"
            "<br>mean bits %{customdata[1]:.2f}<br>sparsity %{customdata[2]:.1%}<br>strategy %{customdata[4]}<extra></extra>"
        ),
    }


def _kb(rows: pd.DataFrame) -> Any:
    return rows["packed_bytes"].to_numpy(dtype=float) / 1000


def _or_none(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def baseline_val(baseline_accuracy: BaselineAccuracy) -> float | None:
    """The validation accuracy of the baseline, from a float or a ``{"val": ..., "test": ...}`` mapping."""
    if baseline_accuracy is None:
        return None
    if isinstance(baseline_accuracy, Mapping):
        value = baseline_accuracy.get("val")
        return None if value is None or not math.isfinite(float(value)) else float(value)
    return float(baseline_accuracy)


def _title(model: str | None, target_bytes: int | None) -> str:
    subject = f"{model}: " if model else ""
    budget = f", target {format_size(target_bytes)}" if target_bytes is not None else ""
    return f"{subject}validation accuracy vs packed size{budget}"
