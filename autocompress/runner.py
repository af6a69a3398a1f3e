"""A whole search, as ``autocompress search`` runs it: the strategy's run, then the report files.

settings -> baseline -> target check -> study -> the strategy (``--mode``) -> best.yaml and best.acz
-> trials.csv, pareto.csv/png/html and a summary in the terminal.
"""

from __future__ import annotations

from autocompress.report import summary_table, trials_frame, write_study_report
from autocompress.search import SearchOutcome, SearchSettings, StudyFacts, execute, open_study
from autocompress.search._context import Log
from autocompress.units import format_size


def run_search(settings: SearchSettings, *, log: Log = print) -> SearchOutcome:
    """Run (or resume) the search ``settings`` describe and write its files into ``settings.study_dir``."""
    outcome = execute(settings, log=log)
    if settings.worker or outcome.trivial:
        return outcome  # a worker leaves the report to the leading process; a trivial target has no study
    study, _ = open_study(settings)
    write_study_report(study, settings.study_dir)
    log(summary_table(trials_frame(study), settings.target_bytes, StudyFacts.of(study).baseline_accuracy))
    if outcome.best_plan is not None and outcome.best_plan.result.get("accuracy"):
        result = outcome.best_plan.result
        baseline = result.get("baseline_accuracy", {}).get("test", float("nan"))
        log(f"best.acz: {format_size(result['packed_bytes'])} (target {format_size(settings.target_bytes)}), "
            f"test top-1 {result['accuracy']['test']:.2%} (baseline {baseline:.2%}); files in {settings.study_dir}")
    return outcome
