"""``autocompress compare``: strategies for combining pruning and quantization, side by side.

Every strategy gets the same target and the same training budget (``epochs`` of fine-tuning, split
as the strategy's ``budget_settings`` says), runs as a study of its own in one shared storage (so the
dashboard shows them all), and leaves a packed file ``<folder>/<strategy>/best.acz`` that fits the
target. The table is then measured from those files. A strategy whose files exist is not run again,
so an interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch
import yaml
from torch import nn

from autocompress.allocation import check_target
from autocompress.compare._table import format_table, write_compare_report
from autocompress.compress import compressible_layers, kept_count
from autocompress.data import prepare_splits
from autocompress.engine import count_bitops, measure_latency, resolve_device
from autocompress.errors import AutocompressError
from autocompress.models import build_model, load_checkpoint
from autocompress.pack import SizeAccountant, read_packed
from autocompress.plan import Plan
from autocompress.runner import execute
from autocompress.search import baseline_accuracy, baseline_cache, prepare_baseline, space_for
from autocompress.settings import SearchSettings, options_of
from autocompress.settings.options import SettingError, apply_readers, choices, integer, number, option, plain_name
from autocompress.strategies import for_mode, get_strategy, strategy_names
from autocompress.study import StudyFacts, dashboard_argument, redact
from autocompress.units import format_size

STRATEGIES: tuple[str, ...] = ("uniform", "prune-then-quantize", "quantize-then-prune", "bo", "admm", "bayesbits", "random")
WALL_ATTR = "compare_wall_seconds"
FAILURE_COLUMNS = ("pruned_nonzero_after_quantization", "pruned_nonzero_after_qat", "pruned_latent_nonzero_after_qat",
                   "pruned_kept_by_final_mask", "kept_codes_changed_by_retraining")


@dataclass
class CompareSettings:
    """A comparison: the shared search settings plus the budget every strategy gets."""

    search: SearchSettings  # model, checkpoint, data, target, bounds, lr, seed, device, output root
    epochs: float = option(2.0, help="fine-tuning epochs each strategy spends in all (bo and random: half on trials, "
                                     "half final; admm: half ADMM, half hard)", read=number(above=0), flag="--epochs")
    trials: int = option(6, help="fine-tuned trials of the bo and random studies (a KL-scored bo study scores the "
                                 "preset's trials and fine-tunes this many of the best)", read=integer(minimum=1),
                         flag="--trials")
    strategies: list[str] = option(help="comma-separated strategies to run", read=choices(strategy_names),
                                   flag="--strategies", default_factory=lambda: list(STRATEGIES))
    name: str | None = option(None, help="folder under --output-root (default MODEL-TARGETB-compare)", read=plain_name(),
                              flag="--name")

    def __post_init__(self) -> None:
        apply_readers(self)

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
        common = for_mode(self.search, strategy, output_root=str(self.folder), study_name=strategy, storage=self.storage)
        return get_strategy(strategy).budget_settings(common, epochs=self.epochs, trials=self.trials)


COMPARE_OPTIONS = options_of(CompareSettings)


def compare_settings(search: SearchSettings, **values: Any) -> CompareSettings:
    """CompareSettings from raw values (flags or Python), one clear error for a bad one."""
    try:
        return CompareSettings(search, **{key: value for key, value in values.items() if value is not None})
    except SettingError as error:
        name = error.fields[0]
        flag = COMPARE_OPTIONS[name].flag if name in COMPARE_OPTIONS else None
        raise AutocompressError(f"{flag} {values.get(name)}: {error.problem}" if flag else str(error)) from None


@dataclass
class StrategyRun:
    """Where one strategy's results are, and what its run cost."""

    strategy: str
    folder: Path
    wall_seconds: float
    device: str
    threads: int


def run_compare(settings: CompareSettings, *, log: Callable[[str], None] = print) -> list[StrategyRun]:
    """Run every strategy not done yet; return all of them (their files are in ``settings.folder``)."""
    search = settings.search
    device = resolve_device(search.device)
    probe = build_model(search.model, num_classes=search.num_classes)
    if search.checkpoint is not None:
        load_checkpoint(probe, search.checkpoint)
    budget = check_target(SizeAccountant(probe, model_spec=search.model), space_for(probe, search), search.target_bytes)
    if budget.trivial:
        raise AutocompressError(f"target {format_size(search.target_bytes)} is at least the uncompressed size "
                                f"{format_size(budget.uncompressed_bytes)}: there is nothing to compare")
    splits = prepare_splits(search.dataset, search.data_dir, val_size=search.val_size, split_seed=search.split_seed)
    if search.checkpoint is None:  # as the search does: train the baseline once, cached; every strategy starts from it
        probe = prepare_baseline(search, splits, device, log=log)
        settings.search = search = dataclasses.replace(search, checkpoint=str(baseline_cache(search)))
    settings.folder.mkdir(parents=True, exist_ok=True)
    log(f"compare {', '.join(settings.strategies)} on {search.model} at {format_size(search.target_bytes)}: "
        f"{settings.epochs:g} epoch(s) of fine-tuning each, on {device}; storage {settings.storage}")
    runs: list[StrategyRun] = []
    accuracy: dict[str, float] | None = None
    for strategy in settings.strategies:
        done = finished_run(settings, strategy)
        if done is not None:
            log(f"{strategy}: already done ({done.wall_seconds / 60:.1f} min); skipped")
            runs.append(done)
            continue
        if accuracy is None:  # measured once for every strategy's study
            accuracy = baseline_accuracy(probe.to(device).eval(), splits, device)
        log(f"{strategy}: {get_strategy(strategy).summary}")
        runs.append(run_strategy(settings, strategy, accuracy, log=log))
    return runs


def run_strategy(settings: CompareSettings, strategy: str, accuracy: dict[str, float], *,
                 log: Callable[[str], None]) -> StrategyRun:
    strategy_settings = settings.for_strategy(strategy)
    started = time.perf_counter()
    execute(strategy_settings, log=lambda message: log(f"  {message}"), known_accuracy=accuracy)
    wall = time.perf_counter() - started
    device = resolve_device(strategy_settings.device).type
    study = optuna.load_study(study_name=strategy, storage=settings.storage)
    study.set_user_attr(WALL_ATTR, {"wall_seconds": wall, "device": device, "threads": torch.get_num_threads()})
    return StrategyRun(strategy, strategy_settings.study_dir, wall, device, torch.get_num_threads())


def finished_run(settings: CompareSettings, strategy: str) -> StrategyRun | None:
    """The strategy's run if its study recorded one and its packed file exists."""
    folder = settings.for_strategy(strategy).study_dir
    if not (folder / "best.acz").is_file() or not (folder / "best.yaml").is_file():
        return None
    if settings.search.storage is None and not (settings.folder / "study.db").is_file():
        return None
    try:
        study = optuna.load_study(study_name=strategy, storage=settings.storage)
    except KeyError:
        return None
    record = study.user_attrs.get(WALL_ATTR)
    if record is None:
        return None
    return StrategyRun(strategy, folder, float(record["wall_seconds"]), record["device"], int(record["threads"]))


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
    measure = measure or MeasureSettings()
    search = settings.search
    device = resolve_device(search.device)
    baseline = build_model(search.model, num_classes=search.num_classes)
    assert search.checkpoint is not None, "run_compare sets the checkpoint (the cached baseline when none was given)"
    load_checkpoint(baseline, search.checkpoint)
    fp32_bytes = sum(tensor.numel() * 4 for tensor in baseline.state_dict().values() if tensor.is_floating_point())
    input_shape = (3, 32, 32)
    reference = _baseline_accuracy(settings, runs)
    models: dict[str, nn.Module] = {"baseline (fp32)": baseline}
    dense = count_bitops(baseline, input_shape, weight_bits={}, activation_bits=32)
    rows: list[dict[str, Any]] = [{
        "strategy": "baseline (fp32)", "bytes": fp32_bytes, "ratio": 1.0, "test_accuracy": reference.get("test"),
        "drop_points": 0.0, "bitops_g": dense.bitops / 1e9, "macs_m": dense.macs_nonzero / 1e6, "sparsity": 0.0,
        "mean_bits": 32.0, "wall_min": None, "device_hours": None, "hyperparameters": None}]
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
                     "drop_points": 100 * (reference["test"] - test) if "test" in reference else None,
                     "bitops_g": counted.bitops / 1e9, "macs_m": counted.macs_nonzero / 1e6, "sparsity": sparsity,
                     "mean_bits": mean_bits, "wall_min": run.wall_seconds / 60, "device_hours": hours,
                     "device_kind": "gpu" if run.device == "cuda" else f"cpu x{run.threads}",
                     "hyperparameters": len(get_strategy(run.strategy).hyperparameters),
                     "val_accuracy": result["accuracy"]["val"],
                     **failure_columns(result.get("measurements", {}).get("failure", {}), packed.model, packed.plan)})
    log(f"latency: {', '.join(models)} in turns, batches {', '.join(map(str, measure.latency_batches))} on {device}")
    for batch in measure.latency_batches:
        seconds = measure_latency(models, input_shape, batch_size=batch, device=device,
                                  rounds=measure.latency_rounds.get(batch, 5))
        for row in rows:
            row[f"latency_b{batch}_ms"] = 1000 * seconds[row["strategy"]]
    return pd.DataFrame(rows)


def stage_accuracies(runs: list[StrategyRun]) -> dict[str, dict[str, float]]:
    """Each naive strategy's validation accuracy after each of its steps (from its ``best.yaml``)."""
    stages = {}
    for run in runs:
        result = yaml.safe_load((run.folder / "best.yaml").read_text())["result"]
        measured = result.get("measurements", {}).get("stage_val_accuracy")
        if measured:
            stages[run.strategy] = dict(measured)
    return stages


def _baseline_accuracy(settings: CompareSettings, runs: list[StrategyRun]) -> dict[str, float]:
    for run in runs:
        study = optuna.load_study(study_name=run.strategy, storage=settings.storage)
        accuracy = StudyFacts.of(study).baseline_accuracy
        if accuracy is not None:
            return dict(accuracy)
    return {}


def sparsity_and_mean_bits(model: nn.Module, bits: dict[str, int]) -> tuple[float, float]:
    """Share of zeros over the compressed layers, and their code bits averaged over the non-zero weights."""
    layers = compressible_layers(model)
    total = sum(layers[name].weight.numel() for name in bits)
    kept = {name: int(torch.count_nonzero(layers[name].weight)) for name in bits}
    n_kept = sum(kept.values())
    mean_bits = sum(kept[name] * bits[name] for name in bits) / n_kept if n_kept else 0.0
    return (1 - n_kept / total if total else 0.0), mean_bits


def failure_columns(measured: dict[str, float], packed_model: nn.Module, plan: Plan) -> dict[str, float | None]:
    """Share of pruned weights made non-zero by quantization and by QAT/retraining.

    The naive strategies measure them between their steps (``measured``). In the joint strategies
    pruning and quantization are one operation applied at every forward pass and when packing, so the
    numbers are measured on the packed weights: among the weights each layer's plan prunes (its
    smallest magnitudes), the share that is non-zero.
    """
    columns: dict[str, float | None] = dict.fromkeys(FAILURE_COLUMNS)
    if measured:
        columns.update({key: measured.get(key) for key in FAILURE_COLUMNS})
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
    runs = run_compare(settings, log=log)
    frame = measure_runs(settings, runs, measure=measure, log=log)
    search = settings.search
    paths = write_compare_report(
        frame, settings.folder, title=f"{search.model} at {format_size(search.target_bytes)}: "
        f"{settings.epochs:g} epoch(s) of fine-tuning per strategy", target_bytes=search.target_bytes, command=command,
        notes={run.strategy: get_strategy(run.strategy).hyperparameters for run in runs}, stages=stage_accuracies(runs))
    log(format_table(frame))
    log(f"wrote {', '.join(str(path) for path in paths.values())}; every strategy is a study in {redact(settings.storage)}: "
        f"optuna-dashboard {dashboard_argument(redact(settings.storage))}")
    return frame
