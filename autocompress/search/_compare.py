"""``autocompress compare``: strategies for combining pruning and quantization, side by side.

Every strategy gets the same target and the same training budget (``epochs``
of fine-tuning, however the strategy splits them), runs as a study of its own
in one shared storage (so the dashboard shows them all), and leaves a packed
file ``<folder>/<strategy>/best.acz`` that fits the target. The table is then
measured from those files. A strategy whose files exist is not run again, so
an interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch
from optuna.trial import TrialState
from torch import nn

from autocompress.compress import compressible_layers, kept_count
from autocompress.data import DataSplits, prepare_splits
from autocompress.engine import resolve_device
from autocompress.errors import AutocompressError
from autocompress.models import build_model, load_checkpoint
from autocompress.pack import SizeAccountant
from autocompress.pipeline import finetune_under_plan_
from autocompress.plan import LayerSetting, Plan
from autocompress.search._budget import best_uniform_plan, check_target
from autocompress.search._naive import NaiveOutcome, NaiveRun, prune_then_quantize_, quantize_then_prune_
from autocompress.search._settings import SearchSettings
from autocompress.search._storage import dashboard_argument, redact
from autocompress.search._study import SearchContext, measure_within_budget, open_study, record_result
from autocompress.units import format_size

STRATEGIES: tuple[str, ...] = ("uniform", "prune-then-quantize", "quantize-then-prune", "bo", "admm", "random")
SINGLE_SHOT: tuple[str, ...] = ("uniform", "prune-then-quantize", "quantize-then-prune")  # one trial on the uniform plan

# What a user of each strategy must choose besides the model: the count in the table is the length of these lists.
HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "uniform": ("target size", "fine-tuning epochs", "learning rate"),
    "prune-then-quantize": ("target size", "pruning retraining epochs", "QAT epochs", "learning rate"),
    "quantize-then-prune": ("target size", "QAT epochs", "pruning retraining epochs", "learning rate"),
    "bo": ("target size", "trials", "epochs per trial", "final epochs", "learning rate", "sampler", "pruner",
           "max sparsity", "min bits", "max bits"),
    "admm": ("target size", "ADMM epochs", "projections per epoch", "rho start", "rho end", "final epochs",
             "learning rate", "max sparsity", "min bits", "max bits"),
    "random": ("target size", "trials", "epochs per trial", "final epochs", "learning rate", "max sparsity",
               "min bits", "max bits"),
}
DESCRIPTIONS: dict[str, str] = {
    "uniform": "one sparsity and one bit-width for every layer (the best that fits), in-parallel pruning-quantization",
    "prune-then-quantize": "magnitude pruning + retraining, then min-max linear quantization of the whole tensor (no code kept for zero), then QAT",
    "quantize-then-prune": "QAT with every weight kept, then magnitude pruning of the quantized weights, "
                           "then retraining without a full-precision copy",
    "bo": "per-layer sparsity and bits by Bayesian optimisation (TPE), in-parallel pruning-quantization (CLIP-Q)",
    "admm": "per-layer allocation learned under the size constraint by ADMM (Yang et al. 2020)",
    "random": "per-layer sparsity and bits by random search, in-parallel pruning-quantization",
}
WALL_ATTR = "compare_wall_seconds"
FAILURE_COLUMNS = ("pruned_nonzero_after_quantization", "pruned_nonzero_after_qat", "pruned_latent_nonzero_after_qat",
                   "pruned_kept_by_final_mask", "kept_codes_changed_by_retraining")


@dataclass
class CompareSettings:
    """A comparison: the shared search settings plus the budget every strategy gets."""

    search: SearchSettings  # model, checkpoint, data, target, bounds, lr, seed, device, output root
    epochs: float = 2.0  # fine-tuning epochs each strategy spends in all
    trials: int = 6  # trials of the bo and random studies (half the epochs), the rest is their final fine-tune
    strategies: tuple[str, ...] = STRATEGIES
    name: str | None = None  # default <model>-<target>B-compare

    def __post_init__(self) -> None:
        unknown = [strategy for strategy in self.strategies if strategy not in STRATEGIES]
        if unknown or not self.strategies:
            raise AutocompressError(f"unknown strategy {', '.join(unknown) or '(none given)'}; "
                                    f"choose from {', '.join(STRATEGIES)}")
        if self.epochs <= 0 or self.trials < 1:
            raise AutocompressError(f"epochs must be positive and trials at least 1, got epochs={self.epochs}, "
                                    f"trials={self.trials}")

    @property
    def resolved_name(self) -> str:
        return self.name or f"{self.search.model.replace(':', '_').replace('.', '_')}-{self.search.target_bytes}B-compare"

    @property
    def folder(self) -> Path:
        return Path(self.search.output_root) / self.resolved_name

    @property
    def storage(self) -> str:
        return self.search.storage or f"sqlite:///{self.folder / 'study.db'}"

    def for_strategy(self, strategy: str) -> SearchSettings:
        """The search settings of one strategy's study (its folder is ``folder/strategy``)."""
        half = self.epochs / 2
        common = dict(output_root=str(self.folder), study_name=strategy, storage=self.storage, n_jobs=1, worker=False,
                      targets=None)
        if strategy in ("bo", "random"):
            return dataclasses.replace(self.search, **common, mode="bo", trials=self.trials,
                                       epochs_per_trial=half / self.trials, final_epochs=half,
                                       sampler="tpe" if strategy == "bo" else "random",
                                       warm_start=strategy == "bo", space="absolute")
        if strategy == "admm":
            return dataclasses.replace(self.search, **common, mode="admm", admm_epochs=half, final_epochs=half)
        return dataclasses.replace(self.search, **common, mode="bo", trials=1, epochs_per_trial=0.0,
                                   final_epochs=self.epochs, warm_start=False)


@dataclass
class StrategyRun:
    """Where one strategy's results are, and what its run cost."""

    strategy: str
    folder: Path
    wall_seconds: float
    device: str
    threads: int
    failure: dict[str, float]
    stages: dict[str, float]


def run_compare(settings: CompareSettings, *, log: Callable[[str], None] = print) -> list[StrategyRun]:
    """Run every strategy not done yet; return all of them (their files are in ``settings.folder``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from autocompress.search._run import baseline_accuracy, baseline_cache, prepare_baseline, record_study_attrs, space_for

    search = settings.search
    device = resolve_device(search.device)
    baseline = build_model(search.model, num_classes=100 if search.dataset == "cifar100" else 10)
    if search.checkpoint is not None:
        load_checkpoint(baseline, search.checkpoint)
    space = space_for(baseline, search)
    budget = check_target(SizeAccountant(baseline, model_spec=search.model), space, search.target_bytes)  # before any training
    if budget.trivial:
        raise AutocompressError(f"target {format_size(search.target_bytes)} is at least the uncompressed size "
                                f"{format_size(budget.uncompressed_bytes)}: there is nothing to compare")
    splits = prepare_splits(search.dataset, search.data_dir, val_size=search.val_size, split_seed=search.split_seed)
    if search.checkpoint is None:  # as the search does: train the baseline once, cached; every strategy starts from it
        baseline = prepare_baseline(search, splits, device, log=log)
        settings.search = search = dataclasses.replace(search, checkpoint=str(baseline_cache(search)))
    settings.folder.mkdir(parents=True, exist_ok=True)
    log(f"compare {', '.join(settings.strategies)} on {search.model} at {format_size(search.target_bytes)}: "
        f"{settings.epochs:g} epoch(s) of fine-tuning each, on {device}; storage {settings.storage}")
    runs = []
    accuracy: dict[str, float] | None = None
    for strategy in settings.strategies:
        done = finished_run(settings, strategy)
        if done is not None:
            log(f"{strategy}: already done ({done.wall_seconds / 60:.1f} min); skipped")
            runs.append(done)
            continue
        if strategy in SINGLE_SHOT:  # the searches create their own studies: the creator queues the warm starts
            if accuracy is None:  # once for all the single-shot strategies' studies
                accuracy = baseline_accuracy(baseline.to(device), splits, device)
                log(f"baseline: val top-1 {accuracy['val']:.2%}, test top-1 {accuracy['test']:.2%}")
            study, _ = open_study(settings.for_strategy(strategy))
            if "baseline_accuracy" not in study.user_attrs:
                record_study_attrs(study, settings.for_strategy(strategy), search.model, accuracy)
        log(f"{strategy}: {DESCRIPTIONS[strategy]}")
        runs.append(run_strategy(settings, strategy, baseline, splits, device, log=log))
    return runs


def run_strategy(settings: CompareSettings, strategy: str, baseline: nn.Module, splits: DataSplits,
                 device: torch.device, *, log: Callable[[str], None]) -> StrategyRun:
    from autocompress.search._run import run_search

    strategy_settings = settings.for_strategy(strategy)
    started = time.perf_counter()
    failure: dict[str, float] = {}
    stages: dict[str, float] = {}
    if strategy not in SINGLE_SHOT:
        run_search(strategy_settings, log=lambda message: log(f"  {message}"))
    else:
        outcome = run_single_shot(strategy_settings, strategy, baseline, splits, device, log=log)
        failure, stages = outcome.measurements, outcome.stage_val_accuracy
    wall = time.perf_counter() - started
    study, _ = open_study(strategy_settings)
    record = {"wall_seconds": wall, "device": device.type, "threads": torch.get_num_threads(),
              "failure": failure, "stages": stages}
    study.set_user_attr(WALL_ATTR, record)
    return StrategyRun(strategy, strategy_settings.study_dir, wall, device.type, torch.get_num_threads(), failure, stages)


def finished_run(settings: CompareSettings, strategy: str) -> StrategyRun | None:
    """The strategy's run if its study recorded one and its packed file exists."""
    strategy_settings = settings.for_strategy(strategy)
    folder = strategy_settings.study_dir
    if not (folder / "best.acz").is_file() or not (folder / "best.yaml").is_file():
        return None
    storage_file = settings.folder / "study.db"
    if settings.search.storage is None and not storage_file.is_file():
        return None
    try:
        study = optuna.load_study(study_name=strategy, storage=settings.storage)
    except KeyError:
        return None
    record = study.user_attrs.get(WALL_ATTR)
    if record is None:
        return None
    return StrategyRun(strategy, folder, float(record["wall_seconds"]), record["device"], int(record["threads"]),
                       dict(record["failure"]), dict(record["stages"]))


def run_single_shot(settings: SearchSettings, strategy: str, baseline: nn.Module, splits: DataSplits,
                    device: torch.device, *, log: Callable[[str], None]) -> NaiveOutcome:
    """uniform, prune-then-quantize or quantize-then-prune: one trial on the best uniform plan."""
    from autocompress.search._run import describe_study, space_for, write_best

    context = SearchContext(settings, baseline, splits, space_for(baseline, settings), device, settings.model)
    plan = best_uniform_plan(context.sizes, context.space, settings.target_bytes)
    if plan is None:
        raise AutocompressError(f"no uniform plan fits {format_size(settings.target_bytes)} within the bounds; "
                                "raise --max-sparsity or lower --min-bits")
    plan.model = settings.model
    setting = next(iter(plan.layers.values()))
    log(f"  plan: every layer at sparsity {setting.sparsity:.3f} and {setting.bits} bits")
    study, _ = open_study(settings)
    with context.interrupt:
        describe_study(study, context, log=lambda message: None)
        started = time.perf_counter()
        with warnings.catch_warnings():  # Optuna's note that heartbeats are meant for Study.optimize: one trial here
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        trial.set_user_attr("strategy", strategy)
        try:
            model = copy.deepcopy(baseline)
            outcome, packing_plan = train_single_shot(model, plan, strategy, context)
            compressed = measure_within_budget(model, packing_plan, context, measure_test=True)
        except BaseException as error:
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}")
            study.tell(trial, state=TrialState.FAIL)
            raise
        record_result(trial, compressed, context, started)
        trial.set_user_attr("test_accuracy", compressed.test_accuracy)
        for key, value in {**outcome.measurements, **{f"val_after_{k}": v for k, v in outcome.stage_val_accuracy.items()}}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, float(compressed.val_accuracy))
        result = write_best(settings.study_dir, compressed, context, study, trial_number=trial.number,
                            extra={"strategy": strategy, "failure": outcome.measurements,
                                   "stage_val_accuracy": outcome.stage_val_accuracy})
    log(f"  {settings.study_dir / 'best.acz'}: {result.result['packed_bytes']:,} B, "
        f"val {compressed.val_accuracy:.2%}, test {compressed.test_accuracy:.2%}")
    return outcome


def train_single_shot(model: nn.Module, plan: Plan, strategy: str, context: SearchContext) -> tuple[NaiveOutcome, Plan]:
    """Train ``model`` the strategy's way (in place); return its measurements and the plan to pack it with."""
    settings = context.settings
    if strategy == "uniform":
        finetune_under_plan_(model, plan, context.splits.train, device=context.device, epochs=settings.final_epochs,
                             lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed,
                             on_step=context.interrupt.check)
        return NaiveOutcome(), plan
    run = NaiveRun(context.splits, context.device, settings.final_epochs, lr=settings.lr,
                   batch_size=settings.batch_size, seed=settings.seed, on_step=context.interrupt.check)
    naive = prune_then_quantize_ if strategy == "prune-then-quantize" else quantize_then_prune_
    outcome = naive(model, plan, run)
    # packed at the plan's sparsity and bits; a k-means codebook keeps the naive model's own levels where it can
    packing_plan = Plan({name: LayerSetting(setting.sparsity, setting.bits, "kmeans") for name, setting in plan.layers.items()},
                        model=plan.model)
    finetune_under_plan_(model, packing_plan, context.splits.train, device=context.device, epochs=0, seed=settings.seed)
    return outcome, packing_plan


@dataclass(frozen=True)
class MeasureSettings:
    """How the hardware columns are measured."""

    latency_batches: tuple[int, ...] = (1, 256)
    latency_rounds: dict[int, int] = dataclasses.field(default_factory=lambda: {1: 30, 256: 5})
    activation_bits: int = 32  # activations stay float32 in every strategy here


def measure_runs(settings: CompareSettings, runs: list[StrategyRun], *, measure: MeasureSettings | None = None,
                 log: Callable[[str], None] = print) -> pd.DataFrame:
    """One row per strategy (and one for the uncompressed baseline), measured from the packed files.

    Bytes are the files' sizes; accuracy is what ``best.yaml`` recorded for the same weights (the tests
    check that ``autocompress evaluate --packed`` reproduces it); BitOps count non-zero weights only;
    latencies are medians of the models run in turns on this machine's device.
    """
    import os

    import yaml

    from autocompress.engine import count_bitops, measure_latency
    from autocompress.pack import read_packed

    measure = measure or MeasureSettings()
    search = settings.search
    device = resolve_device(search.device)
    baseline = build_model(search.model, num_classes=100 if search.dataset == "cifar100" else 10)
    load_checkpoint(baseline, search.checkpoint)
    fp32_bytes = sum(tensor.numel() * 4 for tensor in baseline.state_dict().values() if tensor.is_floating_point())
    input_shape = (3, 32, 32)
    baseline_accuracy = _baseline_accuracy(settings, runs)
    models: dict[str, nn.Module] = {"baseline (fp32)": baseline}
    rows: list[dict[str, Any]] = []
    dense = count_bitops(baseline, input_shape, weight_bits={}, activation_bits=32)
    rows.append({"strategy": "baseline (fp32)", "bytes": fp32_bytes, "ratio": 1.0,
                 "test_accuracy": baseline_accuracy.get("test"), "drop_points": 0.0,
                 "bitops_g": dense.bitops / 1e9, "macs_m": dense.macs_nonzero / 1e6, "sparsity": 0.0, "mean_bits": 32.0,
                 "wall_min": None, "device_hours": None, "hyperparameters": None})
    for run in runs:
        packed = read_packed(run.folder / "best.acz")
        result = yaml.safe_load((run.folder / "best.yaml").read_text())["result"]
        models[run.strategy] = packed.model
        bits = {name: setting.bits for name, setting in packed.plan.layers.items()}
        counted = count_bitops(packed.model, input_shape, weight_bits=bits, activation_bits=measure.activation_bits)
        sparsity, mean_bits = sparsity_and_mean_bits(packed.model, bits)
        n_bytes = os.path.getsize(run.folder / "best.acz")
        test = float(result["accuracy"]["test"])
        hours = run.wall_seconds / 3600 * (1 if run.device == "cuda" else run.threads)
        rows.append({"strategy": run.strategy, "bytes": n_bytes, "ratio": fp32_bytes / n_bytes, "test_accuracy": test,
                     "drop_points": 100 * (baseline_accuracy["test"] - test) if "test" in baseline_accuracy else None,
                     "bitops_g": counted.bitops / 1e9, "macs_m": counted.macs_nonzero / 1e6, "sparsity": sparsity,
                     "mean_bits": mean_bits, "wall_min": run.wall_seconds / 60, "device_hours": hours,
                     "device_kind": "gpu" if run.device == "cuda" else f"cpu x{run.threads}",
                     "hyperparameters": len(HYPERPARAMETERS[run.strategy]), "val_accuracy": result["accuracy"]["val"],
                     **failure_columns(run, packed.model, packed.plan)})
    log(f"latency: {', '.join(models)} in turns, batches {', '.join(map(str, measure.latency_batches))} on {device}")
    for batch in measure.latency_batches:
        seconds = measure_latency(models, input_shape, batch_size=batch, device=device,
                                  rounds=measure.latency_rounds.get(batch, 5))
        for row in rows:
            row[f"latency_b{batch}_ms"] = 1000 * seconds[row["strategy"]]
    return pd.DataFrame(rows)


def _baseline_accuracy(settings: CompareSettings, runs: list[StrategyRun]) -> dict[str, float]:
    for run in runs:
        study = optuna.load_study(study_name=run.strategy, storage=settings.storage)
        if "baseline_accuracy" in study.user_attrs:
            return dict(study.user_attrs["baseline_accuracy"])
    return {}


def sparsity_and_mean_bits(model: nn.Module, bits: dict[str, int]) -> tuple[float, float]:
    """Share of zeros over the compressed layers, and their code bits averaged over the non-zero weights."""
    layers = compressible_layers(model)
    total = sum(layers[name].weight.numel() for name in bits)
    kept = {name: int(torch.count_nonzero(layers[name].weight)) for name in bits}
    n_kept = sum(kept.values())
    mean_bits = sum(kept[name] * bits[name] for name in bits) / n_kept if n_kept else 0.0
    return (1 - n_kept / total if total else 0.0), mean_bits


def failure_columns(run: StrategyRun, packed_model: nn.Module, plan: Plan) -> dict[str, float | None]:
    """Share of pruned weights made non-zero by quantization and by QAT/retraining.

    The naive strategies measure them between their steps. In the joint strategies pruning and
    quantization are one operation applied at every forward pass and when packing, so the numbers are
    measured on the packed weights: among the weights each layer's plan prunes (its smallest
    magnitudes), the share that is non-zero.
    """
    columns = dict.fromkeys(FAILURE_COLUMNS)
    if run.failure:
        columns.update({key: run.failure.get(key) for key in FAILURE_COLUMNS})
        return columns
    share = _pruned_nonzero_in(packed_model, plan)
    columns.update(pruned_nonzero_after_quantization=share, pruned_nonzero_after_qat=share)
    return columns


def _pruned_nonzero_in(model: nn.Module, plan: Plan) -> float:
    layers = compressible_layers(model)
    pruned = nonzero = 0
    for name, setting in plan.layers.items():
        weight = layers[name].weight.detach()
        n_kept = kept_count(weight.numel(), setting.sparsity)
        ranks = torch.argsort(weight.abs().reshape(-1), descending=True, stable=True)
        tail = weight.reshape(-1)[ranks[n_kept:]]  # the positions the plan prunes
        pruned += tail.numel()
        nonzero += int(torch.count_nonzero(tail))
    return nonzero / pruned if pruned else 0.0


def compare(settings: CompareSettings, *, command: str, measure: MeasureSettings | None = None,
            log: Callable[[str], None] = print) -> pd.DataFrame:
    """Run the strategies, measure them and write ``compare.csv``, ``compare.md`` and ``compare.png``."""
    from autocompress.report import format_table, write_compare_report

    runs = run_compare(settings, log=log)
    frame = measure_runs(settings, runs, measure=measure, log=log)
    search = settings.search
    paths = write_compare_report(
        frame, settings.folder, title=f"{search.model} at {format_size(search.target_bytes)}: "
        f"{settings.epochs:g} epoch(s) of fine-tuning per strategy", target_bytes=search.target_bytes, command=command,
        notes={run.strategy: HYPERPARAMETERS[run.strategy] for run in runs},
        stages={run.strategy: run.stages for run in runs if run.stages})
    log(format_table(frame))
    log(f"wrote {', '.join(str(path) for path in paths.values())}; every strategy is a study in {redact(settings.storage)}: "
        f"optuna-dashboard {dashboard_argument(redact(settings.storage))}")
    return frame
