"""The comparison table of ``autocompress compare``: terminal text, ``compare.csv``, ``compare.md``, ``compare.png``."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from autocompress.files import atomic_path
from autocompress.units import format_size

# column -> (heading, format); the order is the table's
TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "strategy": ("strategy", "{}"),
    "bytes": ("bytes", "{:,.0f}"),
    "ratio": ("ratio", "{:.1f}x"),
    "test_accuracy": ("test top-1", "{:.2%}"),
    "drop_points": ("drop (pts)", "{:.2f}"),
    "bitops_g": ("GBitOps", "{:.3f}"),
    "latency_b1_ms": ("ms b=1", "{:.2f}"),
    "latency_b256_ms": ("ms b=256", "{:.0f}"),
    "wall_min": ("wall min", "{:.1f}"),
    "device_hours": ("device h", "{:.2f}"),
    "hyperparameters": ("#hyper", "{:.0f}"),
    "sparsity": ("sparsity", "{:.1%}"),
    "mean_bits": ("mean bits", "{:.2f}"),
    "pruned_nonzero_after_quantization": ("zeros lost: quant", "{:.1%}"),
    "pruned_nonzero_after_qat": ("zeros lost: QAT", "{:.1%}"),
    "kept_codes_changed_by_retraining": ("codes moved: retrain", "{:.2%}"),
}
FAILURE_SENTENCES = {
    "pruned_latent_nonzero_after_qat": "QAT without the mask moved {:.2%} of the pruned weights' full-precision values off zero",
    "pruned_kept_by_final_mask": "packing under the plan re-prunes by magnitude; {:.2%} of the weights pruned at the start "
                                 "are among those it keeps",
    "kept_codes_changed_by_retraining": "retraining changed the code of {:.2%} of the kept weights",
}
MARKERS = "sv^oDxP<>hd"  # one per strategy, in the table's order


def format_table(frame: pd.DataFrame, *, markdown: bool = False) -> str:
    """The table as aligned text (or a Markdown table); a missing value shows as a dash."""
    columns = [column for column in TABLE_COLUMNS if column in frame.columns]
    headings = [TABLE_COLUMNS[column][0] for column in columns]
    body = [[_cell(row[column], TABLE_COLUMNS[column][1]) for column in columns] for _, row in frame.iterrows()]
    if markdown:
        lines = ["| " + " | ".join(headings) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(columns))) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(text) for text in column) for column in zip(headings, *body)]

    def align(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(cells, widths)))

    return "\n".join([align(headings), align(["-" * width for width in widths]), *map(align, body)])


def _cell(value: object, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return pattern.format(value)


def write_compare_report(
    frame: pd.DataFrame,
    folder: str | os.PathLike[str],
    *,
    title: str,
    target_bytes: int,
    command: str,
    notes: Mapping[str, Sequence[str]],
    stages: Mapping[str, Mapping[str, float]],
) -> dict[str, Path]:
    """Write ``compare.csv`` (every measured column), ``compare.md`` and ``compare.png`` into ``folder``.

    ``notes`` maps a strategy to the hyperparameters its user must set; ``stages`` maps a naive
    strategy to its validation accuracy after each of its steps.
    """
    folder = Path(folder)
    paths = {"csv": folder / "compare.csv", "md": folder / "compare.md", "png": folder / "compare.png"}
    with atomic_path(paths["csv"]) as temporary:
        frame.to_csv(temporary, index=False)
    with atomic_path(paths["md"]) as temporary:
        temporary.write_text(compare_markdown(frame, title=title, target_bytes=target_bytes, command=command,
                                              notes=notes, stages=stages))
    plot_compare_png(frame, target_bytes, paths["png"], title=title)
    return paths


def compare_markdown(frame: pd.DataFrame, *, title: str, target_bytes: int, command: str,
                     notes: Mapping[str, Sequence[str]], stages: Mapping[str, Mapping[str, float]]) -> str:
    lines = [f"# {title}", "", f"Target {format_size(target_bytes)}. Produced by:", "", "```bash", command, "```", "",
             format_table(frame, markdown=True), ""]
    if stages:
        lines += ["## The naive strategies, step by step (validation top-1)", ""]
        for strategy, accuracies in stages.items():
            steps = ", ".join(f"{step.replace('_', ' ')} {value:.2%}" for step, value in accuracies.items())
            lines.append(f"- {strategy}: {steps}")
    for column, sentence in FAILURE_SENTENCES.items():
        if column in frame:
            for _, row in frame[frame[column].notna()].iterrows():
                lines.append(f"- {row['strategy']}: {sentence.format(row[column])}")
    lines += ["", "## Hyperparameters each strategy needs", ""]
    lines += [f"- {strategy} ({len(names)}): {', '.join(names)}" for strategy, names in notes.items()]
    return "\n".join(lines) + "\n"


def plot_compare_png(frame: pd.DataFrame, target_bytes: int, path: str | os.PathLike[str], *, title: str) -> Path:
    """Test accuracy against packed bytes, one marker per strategy, the target as a vertical line."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    figure = Figure(figsize=(8.0, 5.2), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    compressed = frame[frame["strategy"] != "baseline (fp32)"]
    for index, (_, row) in enumerate(compressed.iterrows()):
        axes.scatter(row["bytes"] / 1000, row["test_accuracy"], s=60, marker=MARKERS[index % len(MARKERS)],
                     label=f"{row['strategy']} ({row['test_accuracy']:.2%})")
    axes.axvline(target_bytes / 1000, color="#d62728", linestyle="--", label=f"target {format_size(target_bytes)}")
    baseline = frame[frame["strategy"] == "baseline (fp32)"]
    if not baseline.empty and pd.notna(baseline["test_accuracy"].iloc[0]):
        axes.axhline(baseline["test_accuracy"].iloc[0], color="#555555", linestyle=":",
                     label=f"baseline fp32 ({baseline['test_accuracy'].iloc[0]:.2%}, {baseline['bytes'].iloc[0] / 1e6:.2f} MB)")
    axes.set_xlabel("packed file (KB)")
    axes.set_ylabel("test top-1")
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    with atomic_path(path) as temporary:
        figure.savefig(temporary)
    return Path(path)
