"""A whole search: settings -> baseline -> target check -> study -> final fine-tune -> files."""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from torch import nn

from autocompress.compress import compressible_layers
from autocompress.data import DataSplits, DeviceLoader, prepare_splits
from autocompress.engine import evaluate, resolve_device, train
from autocompress.models import build_model, load_checkpoint, save_checkpoint
from autocompress.pack import SizeAccountant
from autocompress.plan import Plan
from autocompress.search._budget import check_target
from autocompress.search._settings import SearchSettings
from autocompress.search._space import SearchSpace
from autocompress.search._study import (
    SearchContext,
    best_feasible_trial,
    enqueue_warm_starts,
    finished_trials,
    measure_within_budget,
    open_study,
    optimize,
    plan_from_attrs,
    relative_space,
    should_warm_start,
    write_best_so_far,
)
from autocompress.search._storage import dashboard_argument, redact
from autocompress.search._workers import local_workers
from autocompress.pipeline import finetune_under_plan_
from autocompress.units import format_size



@dataclass
class SearchOutcome:
    """Where the results are and the headline numbers (None when no feasible trial finished)."""

    study_dir: Path
    study_name: str
    storage: str
    best_plan: Plan | None
    packed_path: Path | None


def run_search(settings: SearchSettings, *, log=print) -> SearchOutcome:  # noqa: ANN001
    """Run (or resume) the search the settings describe and write its files into ``settings.study_dir``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar and summary say what matters
    device = resolve_device(settings.device)
    spec = settings.model
    probe = build_model(spec, num_classes=100 if settings.dataset == "cifar100" else 10)
    if settings.checkpoint is not None:
        load_checkpoint(probe, settings.checkpoint)
    space = space_for(probe, settings)
    probe_sizes = SizeAccountant(probe, model_spec=spec)
    budgets = [check_target(probe_sizes, space, target) for target in settings.resolved_targets]  # before data or training
    budget = budgets[-1] if settings.mode == "admm" else budgets[0]
    splits = prepare_splits(settings.dataset, settings.data_dir, val_size=settings.val_size, split_seed=settings.split_seed)
    baseline = probe if settings.checkpoint is not None else prepare_baseline(settings, splits, device, log=log)
    baseline.to(device).eval()
    folder = settings.study_dir
    folder.mkdir(parents=True, exist_ok=True)
    settings.save(folder / "run.yaml")
    if settings.mode == "admm":
        from autocompress.search._admm_study import run_admm

        return run_admm(settings, baseline, splits, space, device, budgets, log=log)
    if budget.trivial:
        return write_trivial_result(settings, baseline, splits, device, budget.uncompressed_bytes, log=log)
    study, created = open_study(settings)
    context = SearchContext(settings, baseline, splits, space, device, spec)
    if settings.space == "relative":
        anchored = relative_space(context)
        if anchored is None:
            log("relative space: no uniform plan fits the target, so the search uses absolute values")
        else:
            context.space = anchored
            head = next(iter(anchored.anchor.layers.values()))
            log(f"relative space: shifts of +-{anchored.sparsity_shift:g} sparsity and +-{anchored.bits_shift} bits "
                f"around the projection warm start (first layer: sparsity {head.sparsity:.3f}, {head.bits} bits)")
    with context.interrupt:
        describe_study(study, context, log=log)
        if should_warm_start(study, created, settings):
            queued = enqueue_warm_starts(study, context)
            log(f"warm start: queued {', '.join(queued) or 'nothing (no uniform plan fits)'}")
        with local_workers(settings, log=log):
            optimize(study, context, on_trial_end=lambda s, _: write_best_so_far(s, folder, spec, settings.target_bytes))
        write_best_so_far(study, folder, spec, settings.target_bytes)  # other workers' trials may have ended after ours
        if settings.worker:
            return report_worker_done(study, settings, log=log)
        return finalize(study, context, log=log)


def report_worker_done(study: optuna.Study, settings: SearchSettings, *, log=print) -> SearchOutcome:  # noqa: ANN001
    """A --worker leaves the final fine-tune and the files to the process run without --worker."""
    best = best_feasible_trial(study)
    found = "no feasible trial" if best is None else (
        f"best feasible trial {best.number}: val {best.value:.2%}, {best.user_attrs['packed_bytes']:,} B")
    log(f"worker done: {len(finished_trials(study))} finished trial(s) in the study, {found}. The final fine-tune and "
        "best.yaml/best.acz come from the same command without --worker (or `autocompress report` for the tables)")
    return SearchOutcome(settings.study_dir, settings.resolved_study_name, settings.resolved_storage, None, None)


def space_for(model: nn.Module, settings: SearchSettings) -> SearchSpace:
    return SearchSpace(
        layers=tuple(compressible_layers(model)),
        sparsity_min=settings.sparsity_min,
        sparsity_max=settings.sparsity_max,
        bits_min=settings.bits_min,
        bits_max=settings.bits_max,
        quantizers=tuple(settings.quantizers),
    )


def prepare_baseline(settings: SearchSettings, splits: DataSplits, device: torch.device, *, log=print) -> nn.Module:  # noqa: ANN001
    """Train (or load the cached) baseline for a model given without weights; say how long it takes."""
    model = build_model(settings.model, num_classes=splits.num_classes)
    cache = baseline_cache(settings)
    if cache.exists():
        load_checkpoint(model, cache)
        log(f"baseline: cached {cache}")
        return model
    seconds = seconds_per_step(model, splits, device, settings.batch_size)
    steps = settings.baseline_epochs * (len(splits.train) // settings.batch_size)
    log(
        f"no --checkpoint: training a {settings.model} baseline for {settings.baseline_epochs:g} epochs first "
        f"(about {seconds * steps / 3600:.1f} h on {device}, {seconds:.2f} s per step); it is cached in {cache}, "
        f"and an interrupted run resumes. Pass --checkpoint to compress your own trained model instead."
    )
    train(model, splits.train, device=device, epochs=settings.baseline_epochs, lr=0.1, batch_size=settings.batch_size,
          seed=settings.seed, val_set=splits.val, checkpoint_path=cache.with_name(cache.name + ".state"))
    save_checkpoint(cache, model, model_spec=settings.model, dataset=settings.dataset, seed=settings.seed)
    return model


def baseline_cache(settings: SearchSettings) -> Path:
    """Where the baseline trained for a search without --checkpoint is kept (by model, dataset and seed)."""
    return Path(settings.output_root) / "baselines" / f"{settings.model.replace(':', '_')}-{settings.dataset}-s{settings.seed}.pt"


def seconds_per_step(model: nn.Module, splits: DataSplits, device: torch.device, batch_size: int) -> float:
    """Time of one training step, measured on a copy (for the time estimate)."""
    probe = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.SGD(probe.parameters(), lr=0.0)
    loader = DeviceLoader(splits.train, batch_size=batch_size, device=device, augment=True, shuffle=True, seed=0, drop_last=True)
    batches = loader.iter_epoch(0)
    timings = []
    for _ in range(3):
        images, labels = next(batches)
        started = time.perf_counter()
        torch.nn.functional.cross_entropy(probe(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - started)
    return min(timings[1:])


def describe_study(study, context: SearchContext, *, log=print) -> None:  # noqa: ANN001
    settings = context.settings
    done = len(finished_trials(study))
    if settings.mode == "admm":
        log(f"study {settings.resolved_study_name} ({redact(settings.resolved_storage)}): {done} finished trial(s); "
            f"ADMM mode, targets {', '.join(format_size(target) for target in settings.resolved_targets)}, on {context.device}")
    else:
        log(
            f"study {settings.resolved_study_name} ({redact(settings.resolved_storage)}): {done} finished trial(s), "
            f"running to {settings.trials}; target {format_size(settings.target_bytes)}; sampler {settings.sampler}, "
            f"pruner {settings.pruner}; {settings.epochs_per_trial:g} epoch(s) of fine-tuning per trial on {context.device}"
        )
    log(f"watch it live: optuna-dashboard {dashboard_argument(redact(settings.resolved_storage))}")
    if "baseline_accuracy" not in study.user_attrs:
        accuracy = baseline_accuracy(context.baseline, context.splits, context.device)
        record_study_attrs(study, settings, context.model_spec, accuracy)
        log(f"baseline: val top-1 {accuracy['val']:.2%}, test top-1 {accuracy['test']:.2%}")


def baseline_accuracy(model: nn.Module, splits: DataSplits, device: torch.device) -> dict[str, float]:
    return {"val": evaluate(model, splits.val, device=device), "test": evaluate(model, splits.test, device=device)}


def record_study_attrs(study, settings: SearchSettings, model_spec: str, accuracy: dict[str, float]) -> None:  # noqa: ANN001
    """The study's own facts: target, model, settings and the baseline's accuracy (written once)."""
    study.set_user_attr("target_bytes", settings.target_bytes)
    study.set_user_attr("model", model_spec)
    study.set_user_attr("settings", settings.to_dict())
    study.set_user_attr("baseline_accuracy", accuracy)


def finalize(study, context: SearchContext, *, log=print) -> SearchOutcome:  # noqa: ANN001
    """Fine-tune the best feasible plan longer, write best.yaml and best.acz and the report files."""
    from autocompress.report import summary_table, trials_frame, write_study_report

    settings, folder = context.settings, context.settings.study_dir
    best = best_feasible_trial(study)
    outcome = SearchOutcome(folder, settings.resolved_study_name, settings.resolved_storage, None, None)
    if best is not None:
        plan = plan_from_attrs(best, context.model_spec)
        teacher = f", distilled from the baseline at T={settings.distill_temperature:g}" if settings.distill else ""
        log(f"final fine-tune of trial {best.number} ({settings.final_epochs:g} epochs{teacher})")
        model = copy.deepcopy(context.baseline)
        finetune_under_plan_(model, plan, context.splits.train, device=context.device, epochs=settings.final_epochs,
                             lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed,
                             on_step=context.interrupt.check, distillation=settings.final_distillation(context.baseline))
        compressed = measure_within_budget(model, plan, context, measure_test=True)
        final_plan = write_best(folder, compressed, context, study, trial_number=best.number,
                                extra={"search_val_accuracy": round(float(best.value), 4)})
        study.set_user_attr("final", {key: final_plan.result[key] for key in ("packed_bytes", "accuracy", "trial")})
        outcome.best_plan, outcome.packed_path = final_plan, folder / "best.acz"
    write_study_report(study, folder)
    frame = trials_frame(study)
    log(summary_table(frame, settings.target_bytes, study.user_attrs.get("baseline_accuracy")))
    if outcome.best_plan is not None:
        result = outcome.best_plan.result
        log(f"best.acz: {format_size(result['packed_bytes'])} (target {format_size(settings.target_bytes)}), "
            f"test top-1 {result['accuracy']['test']:.2%} (baseline {result['baseline_accuracy'].get('test', float('nan')):.2%}); "
            f"files in {folder}")
    else:
        log("no feasible trial finished yet; rerun the same command to continue the study")
    return outcome


def write_best(folder: Path, compressed, context: SearchContext, study, *, trial_number: int,  # noqa: ANN001
               extra: dict | None = None) -> Plan:
    """Write ``best.acz`` (checked against the target) and ``best.yaml`` (plan + measured results) into ``folder``."""
    settings = context.settings
    folder.mkdir(parents=True, exist_ok=True)
    packed_path = folder / "best.acz"
    compressed.write(packed_path)
    n_bytes = os.path.getsize(packed_path)
    if n_bytes > context.target_bytes:
        raise AssertionError(f"{packed_path} is {n_bytes} bytes, over the target {context.target_bytes}")
    final_plan = compressed.plan
    final_plan.model, final_plan.target_bytes = context.model_spec, context.target_bytes
    final_plan.result = {
        "packed_bytes": n_bytes,
        "compression_ratio": round(compressed.size.ratio_to_fp32 ** -1, 2),
        "accuracy": {"val": round(float(compressed.val_accuracy), 4), "test": round(float(compressed.test_accuracy), 4)},
        "baseline_accuracy": {key: round(float(value), 4) for key, value in study.user_attrs.get("baseline_accuracy", {}).items()},
        "trial": trial_number,
        **(extra or {}),
        "settings": settings.to_dict(),
    }
    final_plan.save(folder / "best.yaml")
    return final_plan


def write_trivial_result(settings: SearchSettings, model: nn.Module, splits: DataSplits, device: torch.device,
                         uncompressed_bytes: int, *, log=print) -> SearchOutcome:  # noqa: ANN001
    """The target is at least the uncompressed size: nothing to search; the trivial plan is the answer."""
    from autocompress.pipeline import harden_and_measure

    folder = settings.study_dir
    plan = Plan(layers={}, model=settings.model, target_bytes=settings.target_bytes)
    compressed = harden_and_measure(model, plan, model_spec=settings.model, num_classes=splits.num_classes,
                                    device=device, splits=splits, measure_test=True)
    compressed.write(folder / "best.acz")
    plan.result = {"packed_bytes": compressed.size.total, "accuracy": {"val": round(compressed.val_accuracy, 4),
                   "test": round(compressed.test_accuracy, 4)}, "note": "target above the uncompressed size: no compression needed"}
    _save_trivial(plan, folder / "best.yaml")
    log(f"target {format_size(settings.target_bytes)} is at least the uncompressed size {format_size(uncompressed_bytes)}: "
        f"no compression needed; wrote the trivial plan and {folder / 'best.acz'}")
    return SearchOutcome(folder, settings.resolved_study_name, settings.resolved_storage, plan, folder / "best.acz")


def _save_trivial(plan: Plan, path: Path) -> None:
    import yaml

    document = plan.to_dict()
    document["layers"] = {}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
