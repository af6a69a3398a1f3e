"""The seed's comparison: strategies side by side at one target and one training budget (the naive baselines
among them, from :mod:`autocompress.strategies`), and the table."""

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
from autocompress.compare._table import format_table, plot_compare_png, write_compare_report

__all__ = [
    "COMPARE_OPTIONS",
    "STRATEGIES",
    "CompareSettings",
    "MeasureSettings",
    "StrategyRun",
    "compare",
    "compare_settings",
    "format_table",
    "measure_runs",
    "plot_compare_png",
    "run_compare",
    "write_compare_report",
]
