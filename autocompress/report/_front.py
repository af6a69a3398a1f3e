"""The accuracy/size front of a search run with ``--front``: ``front.csv`` and ``front.png``.

Top panel: the cheap score (KL to the baseline, log scale) against exact bytes for every front trial,
the Pareto front of (score, bytes) as a line, the search's own trials at the target, and the target.
Bottom panel: test accuracy against bytes of everything that was fine-tuned and measured: the front
points given the short fine-tune, the final model, and the trials of any other study in the same
storage that recorded a test accuracy (an ADMM ``--targets`` sweep, for instance); the baseline's test
accuracy as a dotted line. Sizes in KB (1 KB = 1000 bytes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from autocompress.files import atomic_path
from autocompress.report._frame import trials_frame

_SCORED = "#9e9e9e"
_FRONT = "#2ca02c"
_SEARCH = "#1f77b4"
_TARGET = "#d62728"
_MARKERS = "oDs^v<>P"


def front_frame(front: Any) -> pd.DataFrame:
    """The front study's trials with their score, bytes and whether they are on the (score, bytes) front."""
    frame = trials_frame(front)
    on_front = {trial.number for trial in front.best_trials}
    frame["on_front"] = frame["number"].isin(on_front)
    return frame


def write_front_report(front: Any, search: Any, measured: Sequence[Any], folder: str | os.PathLike[str], *,
                       target_bytes: int | None, baseline_accuracy: Mapping[str, float] | None) -> dict[str, Path]:
    """Write ``front.csv`` (every front trial) and ``front.png`` into ``folder``.

    ``search`` is the search's own study (its scored trials at the target); ``measured`` are the studies
    whose trials with a test accuracy go in the bottom panel (each a series)."""
    folder = Path(folder)
    paths = {"front_csv": folder / "front.csv", "front_png": folder / "front.png"}
    frame = front_frame(front)
    with atomic_path(paths["front_csv"]) as temporary:
        frame.to_csv(temporary, index=False)
    plot_front_png(frame, trials_frame(search), [trials_frame(study) for study in measured], paths["front_png"],
                   target_bytes=target_bytes, baseline_accuracy=baseline_accuracy)
    return paths


def plot_front_png(front: pd.DataFrame, search: pd.DataFrame, measured: Sequence[pd.DataFrame], path: Path, *,
                   target_bytes: int | None, baseline_accuracy: Mapping[str, float] | None) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    figure = Figure(figsize=(8.5, 8.0), dpi=120, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    scored = front[(front["state"] == "COMPLETE") & front["kl_to_baseline"].notna()]
    top.scatter(_kb(scored), scored["kl_to_baseline"], s=14, c=_SCORED, alpha=0.6, label=f"front trials ({len(scored)})")
    pareto = scored[scored["on_front"]].sort_values("packed_bytes")
    if not pareto.empty:
        top.plot(_kb(pareto), pareto["kl_to_baseline"], color=_FRONT, marker="o", markersize=4, linewidth=1.5,
                 label=f"front ({len(pareto)})")
    own = search[(search["state"] == "COMPLETE") & search["kl_to_baseline"].notna()]
    if not own.empty:
        top.scatter(_kb(own), own["kl_to_baseline"], s=14, c=_SEARCH, alpha=0.7, label=f"search at the target ({len(own)})")
    top.set_yscale("log")
    top.set_ylabel("KL(baseline || compressed), nats")
    top.set_title("cheap score (no training) against exact size")
    for index, frame in enumerate(measured):
        rows = frame[(frame["state"] == "COMPLETE") & frame["test_accuracy"].notna() & frame["packed_bytes"].notna()]
        if rows.empty:
            continue
        for (study, fidelity), group in rows.groupby([rows["study"].fillna("?"), rows["fidelity"].fillna("trial")]):
            group = group.sort_values("packed_bytes")
            bottom.plot(_kb(group), group["test_accuracy"], marker=_MARKERS[index % len(_MARKERS)], linestyle="-" if len(group) > 1 else "",
                        label=f"{study}: {fidelity} ({len(group)})")
    baseline = (baseline_accuracy or {}).get("test")
    if baseline is not None:
        bottom.axhline(float(baseline), color="black", linestyle=":", linewidth=1.0, label=f"baseline {float(baseline):.2%}")
    bottom.set_ylabel("test accuracy (reports only)")
    bottom.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    bottom.set_xlabel("packed size (KB, 1 KB = 1000 bytes), log scale")
    bottom.set_title("fine-tuned and measured")
    for axes in (top, bottom):
        if target_bytes is not None:
            axes.axvline(target_bytes / 1000, color=_TARGET, linestyle="--", linewidth=1.3, label=f"target {target_bytes / 1000:,.1f} KB")
        axes.set_xscale("log")
        plain_kb = FuncFormatter(lambda value, _: f"{value:g}")  # 30, 40, 100 rather than 3x10^1, 4x10^1, 10^2
        axes.xaxis.set_major_formatter(plain_kb)
        axes.xaxis.set_minor_formatter(plain_kb)
        axes.grid(True, which="both", alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7, loc="best", framealpha=0.9)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    return path


def _kb(rows: pd.DataFrame) -> Any:
    return rows["packed_bytes"].to_numpy(dtype=float) / 1000
