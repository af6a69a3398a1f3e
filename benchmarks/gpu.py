"""The GPU check: ResNet-18 on CIFAR-10 trained and searched into 1 MB on one CUDA device, in one script.

1. Trains the ResNet-18 baseline (bf16 autocast, channels-last, the data set on the GPU: the engine's
   CUDA path) for ``--epochs`` epochs and prints the seconds per epoch and its test accuracy.
2. Runs the search at ``--target`` with the default recipe of ``studies/resnet18-1MB.yaml`` (the cheap KL
   score in the coefficient space, ``--trials`` CMA-ES trials, the best plan fine-tuned for ``--epochs-per-trial``
   epochs, the front, then a distilled final fine-tune of ``--final-epochs``, or sized to ``--search-time``);
   prints the seconds per trial (median of the scored trials), per short fine-tune,
   and the result: ``best.acz``'s bytes (read from the file) and its test accuracy.

3. Reads ``best.acz`` back (``read_packed``, as ``autocompress evaluate --packed`` does) and checks that
   its test accuracy is the one the search reported.

The checkpoint and the study go to ``--work``; ``--out`` (``$OUT`` on the device machine) gets the
few files worth bringing back: ``gpu-summary.json``, ``best.yaml``, ``best.acz``, ``pareto.png`` and
``trials.csv``. Made to finish inside 10 minutes on one H200 with the defaults.
``benchmarks/gpu_device.sh`` is how it is run through the device tool (data carried in two calls).

    python benchmarks/gpu.py --data-dir ../shared/data --out "$OUT" --work /tmp/work   # on the CUDA machine
    python benchmarks/gpu.py --quick --device cpu --out /tmp/gpu-check                  # a CPU rehearsal of the code path
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import optuna
import torch
import yaml
from _common import machine_line

from autocompress.data import DataSplits, prepare_splits
from autocompress.engine import evaluate, resolve_device, train
from autocompress.models import build_model, save_checkpoint
from autocompress.pack import read_packed
from autocompress.runner import load_settings, run_search
from autocompress.study import TrialRecord

REPO = Path(__file__).resolve().parents[1]


def subset(splits: DataSplits, train_images: int, other_images: int) -> DataSplits:
    """The first images of each split (a CPU rehearsal of the code path)."""
    return DataSplits(splits.train.subset(torch.arange(train_images)), splits.val.subset(torch.arange(other_images)),
                      splits.test.subset(torch.arange(other_images)), splits.num_classes)


def fit_to_seconds(args: argparse.Namespace, timings: dict[str, float]) -> None:
    """Scale ``args``' baseline, short and final epochs by one factor (at most 1) so that the rehearsal's
    per-epoch and per-trial seconds predict a run of at most ``args.fit_seconds`` (60 s kept for the rest).

    The per-epoch time of a fine-tune under a plan is the rehearsal's short fine-tune divided by its
    epochs, which counts that fine-tune's fixed costs into every epoch: an over-estimate, on purpose."""
    finetune_epoch = timings["seconds_per_short_finetune"] / timings["epochs_per_trial"]
    scalable = (args.epochs * timings["epoch_seconds"]
                + (3 * args.epochs_per_trial + args.final_epochs) * finetune_epoch)
    room = args.fit_seconds - 60 - args.trials * timings["seconds_per_trial"]
    factor = min(1.0, max(room, 0.0) / scalable)
    args.epochs, args.epochs_per_trial, args.final_epochs = (
        max(round(args.epochs * factor), 3), max(round(args.epochs_per_trial * factor, 2), 0.1), max(round(args.final_epochs * factor), 1))
    print(f"fitted to {args.fit_seconds:g} s (factor {factor:.2f}): {args.epochs:g} baseline epochs, {args.trials} trials, "
          f"{args.epochs_per_trial:g}-epoch short fine-tunes, {args.final_epochs:g} final epochs", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check")))
    parser.add_argument("--work", type=Path, default=None, help="checkpoint and study folder (default: --out)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=float, default=25, help="baseline training epochs")
    parser.add_argument("--target", default="1MB")
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--epochs-per-trial", type=float, default=1.0)
    parser.add_argument("--final-epochs", type=float, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--search-time", type=float, default=None,
                        help="seconds for the whole search (--time): the final fine-tune is sized to fill them")
    parser.add_argument("--quick", action="store_true", help="a CPU rehearsal: 2,000 images, tiny epochs, 4 trials")
    parser.add_argument("--fit-seconds", type=float, default=None,
                        help="shrink the epochs (never the trials) so the run's estimate fits this many seconds")
    parser.add_argument("--timings", type=Path, default=None, help="a rehearsal's gpu-summary.json, for --fit-seconds")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.trials, args.epochs_per_trial, args.final_epochs = 0.2, 4, 0.05, 0.05
    if args.fit_seconds is not None:
        if args.timings is None or not args.timings.is_file():
            parser.error(f"--fit-seconds needs --timings, a rehearsal's gpu-summary.json (got {args.timings}); run the rehearsal first")
        fit_to_seconds(args, json.loads(args.timings.read_text()))
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out
    work.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    print(machine_line("gpu.py", f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")),
          flush=True)
    full_splits = prepare_splits("cifar10", args.data_dir, val_size=5000, split_seed=0)  # what the search uses
    splits = subset(full_splits, 2000, 500) if args.quick else full_splits
    summary: dict[str, object] = {"device": str(device), "epochs": args.epochs, "trials": args.trials,
                                  "epochs_per_trial": args.epochs_per_trial, "final_epochs": args.final_epochs}

    model = build_model("resnet18")
    started = time.perf_counter()
    result = train(model, splits.train, device=device, epochs=args.epochs, lr=0.1, batch_size=args.batch_size, seed=0,
                   progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    epoch_seconds = (time.perf_counter() - started) / args.epochs
    baseline_test = evaluate(model, splits.test, device=device)
    checkpoint = work / "resnet18-baseline.pt"
    save_checkpoint(checkpoint, model, model_spec="resnet18")
    summary.update(epoch_seconds=round(epoch_seconds, 2), baseline_test=baseline_test, final_loss=result.final_loss)
    print(f"baseline: {args.epochs:g} epochs, {epoch_seconds:.2f} s per epoch, test top-1 {baseline_test:.2%}", flush=True)

    settings = load_settings(REPO / "studies" / "resnet18-1MB.yaml", {  # the preset: the default recipe
        "checkpoint": str(checkpoint), "data_dir": str(args.data_dir), "target_size": args.target, "trials": args.trials,
        "epochs_per_trial": args.epochs_per_trial, "final_epochs": args.final_epochs, "batch_size": args.batch_size,
        "device": args.device, "output_root": str(work / "studies"), "study_name": "resnet18-1MB",
        **({"time_budget_seconds": args.search_time} if args.search_time else {}),
    })
    started = time.perf_counter()
    outcome = run_search(settings, log=lambda message: print(f"  {message}", flush=True))
    search_minutes = (time.perf_counter() - started) / 60
    study = optuna.load_study(study_name="resnet18-1MB", storage=settings.resolved_storage)
    scored = [TrialRecord.of(trial) for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    companion = optuna.load_study(study_name="resnet18-1MB.finetune", storage=settings.resolved_storage)
    tuned = [TrialRecord.of(trial) for trial in companion.trials if TrialRecord.of(trial).fidelity == "finetune"]
    best = yaml.safe_load((settings.study_dir / "best.yaml").read_text())["result"]
    packed = settings.study_dir / "best.acz"
    summary.update(
        seconds_per_trial=round(statistics.median(float(record.wall_seconds or 0) for record in scored), 2),
        seconds_per_short_finetune=round(statistics.median(float(record.wall_seconds or 0) for record in tuned), 1) if tuned else None,
        search_minutes=round(search_minutes, 1), packed_bytes=os.path.getsize(packed), test=best["accuracy"]["test"],
        val=best["accuracy"]["val"], trial=best["trial"], maker=scored[best["trial"]].strategy if best["trial"] < len(scored) else None)
    print(f"search: {len(scored)} trials, {summary['seconds_per_trial']} s per trial (median), "
          f"{summary['seconds_per_short_finetune']} s per short fine-tune, {search_minutes:.1f} min in all", flush=True)
    print(f"result: best.acz {summary['packed_bytes']:,} B (target {args.target}), test top-1 {summary['test']:.2%} "
          f"(baseline {baseline_test:.2%}), plan of trial {summary['trial']} by {summary['maker']}", flush=True)
    packed_test = evaluate(read_packed(packed).model, full_splits.test, device=device)
    summary.update(packed_test=packed_test)
    print(f"best.acz read back: test top-1 {packed_test:.2%} (the search reported {summary['test']:.2%})", flush=True)
    (args.out / "gpu-summary.json").write_text(json.dumps(summary, indent=1))
    for name in ("best.yaml", "best.acz", "pareto.png", "trials.csv"):
        if (settings.study_dir / name).exists():
            shutil.copy(settings.study_dir / name, args.out / name)
    assert outcome.packed_path is not None and os.path.getsize(outcome.packed_path) <= settings.target_bytes
    assert abs(packed_test - float(summary["test"])) <= 0.001, "best.acz does not reproduce the reported accuracy (0.1 points)"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
