"""The files a run leaves in its study folder: ``best.yaml`` and ``best.acz``, and the best trial so far."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from autocompress.engine import resolved_precision
from autocompress.files import write_text
from autocompress.pipeline import CompressedModel, harden_and_measure
from autocompress.plan import Plan
from autocompress.search._context import SearchContext
from autocompress.settings import SETTING_OPTIONS, SearchSettings, default_of
from autocompress.study import StudyFacts, TrialRecord, best_feasible_trial
from autocompress.units import format_size


@dataclass
class SearchOutcome:
    """Where the results are and the headline numbers (``best_plan`` None when nothing feasible finished)."""

    study_dir: Path
    study_name: str
    storage: str
    best_plan: Plan | None = None
    packed_path: Path | None = None
    trivial: bool = False  # the target needed no compression: no study was run

    @classmethod
    def empty(cls, context: SearchContext) -> SearchOutcome:
        settings = context.settings
        return cls(settings.study_dir, settings.resolved_study_name, settings.resolved_storage)


def write_best(folder: Path, compressed: CompressedModel, context: SearchContext, *, trial_number: int,
               extra: dict[str, Any] | None = None) -> Plan:
    """Write ``best.acz`` (checked against the target) and ``best.yaml`` (plan + measured results) into ``folder``."""
    packed_path = folder / "best.acz"
    compressed.write(packed_path)
    n_bytes = os.path.getsize(packed_path)
    if n_bytes > context.target_bytes:  # the writer's own check makes this unreachable; a file over budget never ships
        packed_path.unlink()
        raise AssertionError(f"{packed_path} was {n_bytes} bytes, over the target {context.target_bytes}; removed")
    study = context.opened_study
    final_plan = compressed.plan
    final_plan.model, final_plan.target_bytes = context.model_spec, context.target_bytes
    final_plan.result = {
        "packed_bytes": n_bytes,
        "compression_ratio": round(compressed.size.ratio_to_fp32 ** -1, 2),
        "accuracy": {"val": round(float(compressed.val_accuracy or 0.0), 4), "test": round(float(compressed.test_accuracy or 0.0), 4)},
        "baseline_accuracy": {key: round(float(value), 4) for key, value in (StudyFacts.of(study).baseline_accuracy or {}).items()},
        "trial": trial_number,
        "trained_in": resolved_precision(context.device, context.settings.precision),
        **(extra or {}),
        "settings": context.settings.to_dict(),
    }
    final_plan.save(folder / "best.yaml")
    return final_plan


MEASURED_RESULT_KEYS = ("packed_bytes", "compression_ratio", "accuracy", "baseline_accuracy", "trial", "trained_in")
"""What ``best.yaml`` records about the fine-tuned model itself; the rest of its result says how it was chosen."""


def restate_choice(folder: Path, written: Plan, context: SearchContext, facts: dict[str, Any]) -> Plan:
    """Rewrite ``best.yaml`` (an earlier run's final fine-tune, reused) with today's choice: the facts of how this
    run chose the plan and this run's settings, so the file never reports a choice another run made. The model's
    measured results and ``best.acz`` are kept as they are."""
    result = written.result or {}
    written.result = {**{key: result[key] for key in MEASURED_RESULT_KEYS if key in result}, **facts,
                      "settings": context.settings.to_dict()}
    if written.result != result:
        written.save(folder / "best.yaml")
    return written


FINAL_FINETUNE_SETTINGS = ("model", "dataset", "target_bytes", "final_epochs", "lr", "batch_size", "seed", "val_size",
                           "split_seed", "distill", "distill_temperature", "distill_weight", "precision")
"""The settings that decide what a final fine-tune produces; a rerun that changes one of them trains again."""

BOOKKEEPING_SETTINGS = ("study_name", "output_root", "data_dir", "storage", "device", "n_jobs", "worker",
                        "heartbeat_seconds", "max_retries", "timeout_seconds", "time_budget_seconds")
"""Settings that say where and how a run goes, not what it produces."""

TRIAL_SEARCH_SETTINGS = ("sampler", "pruner", "sampler_startup_trials", "trials", "epochs_per_trial", "warm_start", "space",
                         "coefficient_range", "trial_score", "score_images", "score_bn_images", "front", "front_trials",
                         "front_finetunes", "finetune_top", "time_budget_seconds")
"""Settings read only by the trial-based search (its sampler, space, score and fidelity levels): a one-plan
mode's result does not depend on them, so changing one does not train that plan again."""


def finished_final(context: SearchContext, trial_number: int, folder: Path) -> Plan | None:
    """The plan an earlier run of this study wrote after the final fine-tune of ``trial_number``, when
    ``folder`` still holds both files of it and the fine-tune's settings are today's; None otherwise.

    The study records the final fine-tune (``StudyFacts.final``) only after both files are written, so an
    interrupted fine-tune is never mistaken for a finished one."""
    final = StudyFacts.of(context.opened_study).final
    if not final or final.get("trial") != trial_number:
        return None
    return _written_best(context, folder, trial_number, FINAL_FINETUNE_SETTINGS)


def finished_single_plan(context: SearchContext, strategy: str, folder: Path) -> Plan | None:
    """The plan an earlier run of a one-plan mode (``strategy``) wrote into ``folder``, when the study holds
    that run's trial as complete and every setting that shapes the result is today's; None otherwise.
    ``best.yaml`` is written only after its trial completed, so an interrupted run leaves nothing to reuse."""
    best_yaml = folder / "best.yaml"
    if not best_yaml.is_file():
        return None
    trial_number = (Plan.load(best_yaml).result or {}).get("trial")
    trials = context.opened_study.get_trials(deepcopy=False)
    if not isinstance(trial_number, int) or not 0 <= trial_number < len(trials):
        return None
    trial, record = trials[trial_number], TrialRecord.of(trials[trial_number])
    if trial.state != optuna.trial.TrialState.COMPLETE or record.strategy != strategy or record.target_bytes != context.target_bytes:
        return None
    shaping = tuple(key for key in context.settings.to_dict() if key not in BOOKKEEPING_SETTINGS + TRIAL_SEARCH_SETTINGS)
    return _written_best(context, folder, trial_number, shaping)


def _written_best(context: SearchContext, folder: Path, trial_number: int, keys: tuple[str, ...]) -> Plan | None:
    """``folder``'s ``best.yaml`` when it is of ``trial_number``, ``best.acz`` beside it has the bytes it
    records, and the settings it was written under agree with today's on ``keys``."""
    best_yaml, best_acz = folder / "best.yaml", folder / "best.acz"
    if not best_yaml.is_file() or not best_acz.is_file():
        return None
    plan = Plan.load(best_yaml)
    result = plan.result or {}
    written, today = result.get("settings") or {}, context.settings.to_dict()
    if result.get("trial") != trial_number or result.get("packed_bytes") != os.path.getsize(best_acz):
        return None
    if any(written_setting(written, key) != today[key] for key in keys):
        return None
    trains_in = resolved_precision(context.device, context.settings.precision)
    if result.get("trained_in", trains_in) != trains_in:  # recorded since "auto" means bf16 on some CPUs
        return None
    return plan


def written_setting(written: dict[str, Any], key: str) -> Any:
    """A setting as an earlier run recorded it; a setting added since then counts as its default, which is
    what that run did (so a new version's new setting does not throw away an old run's finished result)."""
    if key in written:
        return written[key]
    return default_of(SearchSettings, key) if key in SETTING_OPTIONS else "missing"


def outcome_of(context: SearchContext, plan: Plan, folder: Path) -> SearchOutcome:
    outcome = SearchOutcome.empty(context)
    outcome.best_plan, outcome.packed_path = plan, folder / "best.acz"
    return outcome


def write_trivial_result(context: SearchContext, uncompressed_bytes: int) -> SearchOutcome:
    """The target is at least the uncompressed size: nothing to search; the trivial plan is the answer."""
    settings, folder = context.settings, context.settings.study_dir
    plan = Plan(layers={}, model=settings.model, target_bytes=settings.target_bytes)
    compressed = harden_and_measure(context.baseline, plan, model_spec=settings.model, num_classes=context.splits.num_classes,
                                    device=context.device, splits=context.splits, measure_test=True)
    compressed.write(folder / "best.acz")
    plan.result = {"packed_bytes": compressed.size.total, "accuracy": {"val": round(compressed.val_accuracy or 0.0, 4),
                   "test": round(compressed.test_accuracy or 0.0, 4)}, "note": "target above the uncompressed size: no compression needed"}
    document = plan.to_dict()
    document["layers"] = {}  # the plan format asks for layers; an empty mapping says "nothing compressed"
    write_text(folder / "best.yaml", yaml.safe_dump(document, sort_keys=False))
    context.log(f"target {format_size(settings.target_bytes)} is at least the uncompressed size "
                f"{format_size(uncompressed_bytes)}: no compression needed; wrote the trivial plan and {folder / 'best.acz'}")
    outcome = outcome_of(context, plan, folder)
    outcome.trivial = True
    return outcome


def write_best_so_far(study: optuna.Study, folder: Path, model_spec: str, target_bytes: int) -> None:
    """Persist the best feasible plan after every trial (before its final fine-tune)."""
    best = best_feasible_trial(study)
    if best is None:
        return
    record = TrialRecord.of(best)
    plan = record.plan_for(model_spec)
    plan.target_bytes = target_bytes
    plan.result = {
        "trial": best.number,
        "packed_bytes": record.packed_bytes,
        (study.metric_names[0] if study.metric_names else "value"): round(float(best.value or 0.0), 4),
        "note": "best trial so far, before the final fine-tune",
    }
    plan.save(folder / "best_trial.yaml")
