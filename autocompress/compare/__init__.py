"""The seed's comparison: strategies side by side at one target and one training budget, the naive
baselines (prune then quantize, quantize then prune) and the table. Importing it registers the naive
strategies (``compare`` runs them; ``search --mode`` does not offer them)."""

from __future__ import annotations

from autocompress.compare._compare import (
    COMPARE_OPTIONS,
    STRATEGIES,
    CompareSettings,
    MeasureSettings,
    StrategyRun,
    compare,
    compare_settings,
    measure_runs,
    run_compare,
)
from autocompress.compare._naive import NaiveRun, PruneThenQuantize, QuantizeThenPrune, prune_then_quantize_, quantize_then_prune_
from autocompress.compare._table import format_table, plot_compare_png, write_compare_report

__all__ = [
    "COMPARE_OPTIONS",
    "STRATEGIES",
    "CompareSettings",
    "MeasureSettings",
    "NaiveRun",
    "PruneThenQuantize",
    "QuantizeThenPrune",
    "StrategyRun",
    "compare",
    "compare_settings",
    "format_table",
    "measure_runs",
    "plot_compare_png",
    "prune_then_quantize_",
    "quantize_then_prune_",
    "run_compare",
    "write_compare_report",
]
