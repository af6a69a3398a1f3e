"""Everything a finished study leaves for people to read: the trial table, the front and its plots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from autocompress.files import atomic_path
from autocompress.report._frame import pareto_frame, trials_frame
from autocompress.report._plots import plot_pareto_html, plot_pareto_png
from autocompress.study import StudyFacts

if TYPE_CHECKING:
    import optuna

REPORT_FILES: dict[str, str] = {
    "trials_csv": "trials.csv",
    "pareto_csv": "pareto.csv",
    "pareto_png": "pareto.png",
    "pareto_html": "pareto.html",
}


def write_study_report(study: optuna.Study, folder: str | os.PathLike[str], *companions: optuna.Study) -> dict[str, Path]:
    """Write ``trials.csv``, ``pareto.csv``, ``pareto.png`` and ``pareto.html`` into ``folder``.

    ``companions`` (a kl-scored search's fine-tune study) add their trials to the tables: those are the
    trials with a measured accuracy, so the accuracy/size plots show them.

    The target size, the model name and the baseline accuracy come from the study's user attributes
    (``target_bytes``, ``model``, ``baseline_accuracy``); any of them may be absent. Each file is written
    to a temporary name and moved into place, so a reader never sees a half-written report, and the
    folder is created if needed. Returns the paths keyed as in ``REPORT_FILES``
    (``trials_csv``, ``pareto_csv``, ``pareto_png``, ``pareto_html``). Works on a study with no trials.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {key: folder / name for key, name in REPORT_FILES.items()}
    facts = StudyFacts.of(study)
    target_bytes = int(facts.target_bytes) if facts.target_bytes is not None else None
    model, baseline = facts.model, facts.baseline_accuracy

    frame = trials_frame(study, *companions)
    with atomic_path(paths["trials_csv"]) as temporary:
        frame.to_csv(temporary, index=False)
    with atomic_path(paths["pareto_csv"]) as temporary:
        pareto_frame(frame).to_csv(temporary, index=False)
    plot_pareto_png(frame, target_bytes, paths["pareto_png"], model=model, baseline_accuracy=baseline)
    plot_pareto_html(frame, target_bytes, paths["pareto_html"], model=model, baseline_accuracy=baseline)
    return paths
