"""Reports on a study: the trial table and Pareto front (CSV), accuracy-vs-size plots, a terminal summary."""

from __future__ import annotations

from autocompress.report._frame import (
    BASE_COLUMNS,
    best_feasible,
    feasible_ranking,
    frame_from_trials,
    pareto_frame,
    trials_frame,
)
from autocompress.report._front import front_frame, plot_front_png, write_front_report
from autocompress.report._plots import plot_pareto_html, plot_pareto_png
from autocompress.report._summary import summary_table
from autocompress.report._write import REPORT_FILES, write_study_report

__all__ = [
    "BASE_COLUMNS",
    "REPORT_FILES",
    "best_feasible",
    "feasible_ranking",
    "frame_from_trials",
    "front_frame",
    "pareto_frame",
    "plot_front_png",
    "plot_pareto_html",
    "plot_pareto_png",
    "summary_table",
    "trials_frame",
    "write_front_report",
    "write_study_report",
]
