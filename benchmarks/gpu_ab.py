"""The bar's A/B (search against the projection warm start) on one GPU, many arms at once, against a deadline.

``search_ab.py`` runs the arms one after another, which is what a 2-core CPU can afford (about 40 min
an arm on ResNet-20 at 20 epochs). A large GPU is mostly idle under one small CIFAR fine-tune, so this
script runs several arms as separate processes side by side on it. Each arm is exactly
``search_ab.py``'s (``arm``): the same settings, the same final fine-tune in both arms of a seed, test
accuracy read from ``best.yaml``.

The queue is seed-major (a seed's search arm, then its projection arm; experiments interleaved seed by
seed), so the seeds that finish are the first ones: which seeds count does not depend on their results.
An arm starts only when a slot is free and its predicted time (from ``gpu_probe.py``'s steps per second
at that many processes, times a safety factor) ends before ``--deadline-seconds``; an arm that would not
drops its experiment's later arms from the queue. At the deadline the arms still running are stopped and
counted as unfinished. Prints each seed as it finishes, then each
experiment's summary (``search_ab.summarize``), and writes the rows as JSON.

    python benchmarks/gpu_ab.py --probe /tmp/probe.json --weights-dir W --data-dir D --deadline-seconds 540 --json "$OUT/gpu_ab.json"

Through the device tool: ``bash benchmarks/gpu_device.sh ab-probe`` (carry .whl .gpu/a .gpu/weights), then at
once ``bash benchmarks/gpu_device.sh ab --deadline-seconds 540 --experiments resnet20-50KB:5 --seeds 12``
(carry .gpu/b); results of 2026-12-04 in ``benchmarks/results/gpu-ab-resnet20-50KB/``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from _common import machine_line
from search_ab import SEARCH, arm, seed_line, summarize

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 352  # 45,000 training images in steps of 128
# A cheap-score trial (BN re-estimation and the KL pass, forward only, plus the projection and the sampler) in
# training steps: 25 was the first guess; on the H200 a trial took about 2.5 s at 6 arms at once (20.9 steps/s
# each), about 50 steps, and the search arms ran 345-386 s against 275-297 s predicted (2026-12-04).
TRIAL_STEPS = 50
EVAL_STEPS = 60  # BN recalibration and the val/test passes of one fine-tuned plan
SAFETY = 1.3  # predicted times are stretched by this much before an arm is started


@dataclass(frozen=True)
class Experiment:
    """One model and budget of the bar: its preset, checkpoint file, and the final fine-tune's epochs."""

    name: str
    config: Path
    checkpoint: str
    model: str
    final_epochs: float

    @property
    def epochs_per_trial(self) -> float:
        """The preset's short fine-tune (the search arm gives its best few plans this many epochs)."""
        return float(yaml.safe_load(self.config.read_text())["epochs_per_trial"])


EXPERIMENTS = {
    "resnet20-50KB": Experiment("resnet20-50KB", REPO / "studies" / "resnet20-50KB.yaml", "resnet20-12fca82f.th",
                                "resnet20", 20),
    "resnet56-100KB": Experiment("resnet56-100KB", REPO / "studies" / "resnet56-100KB.yaml", "resnet56-4bfd9763.th",
                                 "resnet56", 6),
}


@dataclass
class Task:
    """One arm of one seed of one experiment, and the process running it."""

    experiment: Experiment
    seed: int
    name: str  # "search" or "projection"
    overrides: dict[str, Any]
    process: Any = None
    started: float = 0.0
    result: dict[str, Any] | None = field(default=None)


def run_arm(task_args: dict[str, Any], overrides: dict[str, Any], name: str, seed: int, threads: int,
            log_path: str, results: Any) -> None:
    """One arm in its own process (its output to ``log_path``); puts ``(key, result or error)`` on ``results``."""
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        torch.set_num_threads(threads)
        key = f"{task_args['experiment']}/{name}/s{seed}"
        try:
            results.put((key, arm(argparse.Namespace(**task_args), name, seed, overrides)))
        except BaseException as error:  # reported to the parent, which prints it and carries on
            results.put((key, {"error": f"{type(error).__name__}: {error}"}))
            raise


def per_process_rate(probe: dict[str, Any], model: str, processes: int) -> float:
    """Training steps per second of one of ``processes`` processes fine-tuning ``model`` at once.

    The probe measures resnet20 at several numbers of processes and each model alone; a model's rate is
    its rate alone scaled by resnet20's slow-down at that number (linear between measured numbers, and
    the total flat beyond the largest)."""
    levels = sorted(probe["models"]["resnet20"], key=lambda row: row["processes"])
    alone = {name: rows[0]["per_process"] for name, rows in probe["models"].items() if rows[0]["processes"] == 1}
    points = [(row["processes"], row["total"]) for row in levels]
    if processes >= points[-1][0]:
        total = points[-1][1]
    else:
        total = next(t0 + (t1 - t0) * (processes - p0) / (p1 - p0)
                     for (p0, t0), (p1, t1) in itertools.pairwise(points) if p0 <= processes <= p1)
    slowdown = (total / processes) / alone["resnet20"]
    return alone.get(model, alone["resnet20"]) * slowdown


def best_slots(probe: dict[str, Any]) -> int:
    """The fewest processes whose total resnet20 throughput is within 5 % of the best measured."""
    rows = sorted(probe["models"]["resnet20"], key=lambda row: row["processes"])
    best = max(row["total"] for row in rows)
    return next(int(row["processes"]) for row in rows if row["total"] >= 0.95 * best)


def predicted_steps(task: Task) -> float:
    """Training steps (of the arm's own model) an arm takes: the final fine-tune, and for the search arm its
    cheap-score trials and short fine-tunes."""
    steps = task.experiment.final_epochs * STEPS_PER_EPOCH + EVAL_STEPS
    if task.name == "search":
        top = int(task.overrides.get("finetune_top", 3))
        steps += int(task.overrides["trials"]) * TRIAL_STEPS
        epochs = float(task.overrides.get("epochs_per_trial", task.experiment.epochs_per_trial))
        steps += top * (epochs * STEPS_PER_EPOCH + EVAL_STEPS)
    return steps


def build_queue(args: argparse.Namespace) -> list[Task]:
    """Seed-major: for seed first, first + 1, ...: each experiment's search arm, then its projection arm."""
    common = {"distill": True, "device": args.device, **json.loads(args.common)}
    search = {**common, **SEARCH, "finetune_top": 3, "trials": args.trials, **json.loads(args.search)}
    chosen = [EXPERIMENTS[name.split(":")[0]] for name in args.experiments.split(",")]
    epochs = {name.split(":")[0]: float(name.split(":")[1]) for name in args.experiments.split(",") if ":" in name}
    chosen = [Experiment(e.name, e.config, e.checkpoint, e.model, epochs.get(e.name, e.final_epochs)) for e in chosen]
    queue = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for experiment in chosen:
            checkpoint = {"checkpoint": str(args.weights_dir / experiment.checkpoint)}
            queue.append(Task(experiment, seed, "search", {**search, **checkpoint}))
            queue.append(Task(experiment, seed, "projection", {**common, **checkpoint, "mode": "projection"}))
    return queue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", type=Path, required=True, help="gpu_probe.py's JSON")
    parser.add_argument("--experiments", default="resnet20-50KB:5",
                        help="name:final-epochs, comma-separated (resnet20-50KB, resnet56-100KB); 5 epochs on "
                             "ResNet-20 let 5 seeds finish in 9 min on an H200, 20 would not have")
    parser.add_argument("--seeds", type=int, default=12, help="seeds queued per experiment (those that fit run)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first seed queued: a later run appends seeds to an earlier one's (it ran 0-4)")
    parser.add_argument("--trials", type=int, default=100, help="the search arm's cheap-score trials")
    parser.add_argument("--search", default="{}", help="more settings of the search arm, as JSON")
    parser.add_argument("--common", default="{}", help="more settings of both arms, as JSON")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--slots", type=int, default=None, help="arms at once (default: from the probe)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--deadline-seconds", type=float, required=True)
    parser.add_argument("--weights-dir", type=Path, default=REPO.parent / "shared" / "weights" / "akamaster")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--output-root", type=Path, default=Path("/tmp/gpu_ab"))
    parser.add_argument("--json", type=Path, required=True, help="where the rows go")
    args = parser.parse_args()
    if args.first_seed < 0 or args.seeds < 1:
        parser.error("--first-seed must be >= 0 and --seeds >= 1")
    if not args.probe.is_file():
        parser.error(f"--probe {args.probe} is not a file: run gpu_probe.py first (gpu_device.sh ab-probe)")
    unknown = [name.split(":")[0] for name in args.experiments.split(",") if name.split(":")[0] not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}: use {', '.join(EXPERIMENTS)}")
    began = time.perf_counter()
    deadline = began + args.deadline_seconds
    probe = json.loads(args.probe.read_text())
    slots = args.slots or best_slots(probe)
    queue = build_queue(args)
    print(machine_line("gpu_ab.py", f"device {args.device}, {slots} arms at once, deadline {args.deadline_seconds:g} s, "
                                    f"experiments {args.experiments}, trials {args.trials}"), flush=True)
    (args.output_root / "logs").mkdir(parents=True, exist_ok=True)
    context = mp.get_context("spawn")
    results = context.Queue()
    running: list[Task] = []
    finished: dict[tuple[str, int, str], dict[str, Any]] = {}
    waiting = list(queue)
    try:
        run_queue(waiting, running, finished, slots, probe, deadline, began, args, context, results)
    finally:  # the deadline, Ctrl-C or an error here: no arm outlives the script
        for task in running:
            print(f"  stopped {task.experiment.name} s{task.seed} {task.name} after "
                  f"{time.perf_counter() - task.started:.0f} s (unfinished)", flush=True)
            task.process.terminate()
    return report(args, finished)


def run_queue(waiting: list[Task], running: list[Task], finished: dict[tuple[str, int, str], dict[str, Any]],
              slots: int, probe: dict[str, Any], deadline: float, began: float, args: argparse.Namespace,
              context: Any, results: Any) -> None:
    """Start arms while slots are free and they fit the deadline; collect results until the deadline."""
    while (waiting or running) and time.perf_counter() < deadline:
        while waiting and len(running) < slots:
            task = waiting.pop(0)
            rate = per_process_rate(probe, task.experiment.model, len(running) + 1)
            seconds = SAFETY * predicted_steps(task) / rate
            if time.perf_counter() + seconds > deadline:
                print(f"  not started: {task.experiment.name} s{task.seed} {task.name} and its later seeds "
                      f"(predicted {seconds:.0f} s, {deadline - time.perf_counter():.0f} s left)", flush=True)
                # the seeds that count stay a prefix: none of this experiment's later arms starts either
                waiting[:] = [later for later in waiting if later.experiment != task.experiment]
                continue
            task_args = {"experiment": task.experiment.name, "config": task.experiment.config,
                         "final_epochs": task.experiment.final_epochs, "output_root": args.output_root,
                         "data_dir": args.data_dir, "verbose": True}
            log_path = args.output_root / "logs" / f"{task.experiment.name}-{task.name}-s{task.seed}.log"
            task.process = context.Process(target=run_arm, args=(task_args, task.overrides, task.name, task.seed,
                                                                 max(1, args.cores // slots), str(log_path), results))
            task.started = time.perf_counter()
            task.process.start()
            running.append(task)
            print(f"  {time.perf_counter() - began:5.0f} s: started {task.experiment.name} s{task.seed} {task.name} "
                  f"(predicted {seconds:.0f} s at {len(running)} at once)", flush=True)
        try:
            key, result = results.get(timeout=2)
        except Exception:  # nothing finished in the last 2 s
            running[:] = [task for task in running if task.process.is_alive() or _report_dead(task)]
            continue
        experiment_name, name, seed_text = key.split("/")
        done = next(task for task in running if (task.experiment.name, task.name, f"s{task.seed}") == (experiment_name, name, seed_text))
        done.process.join()
        running.remove(done)
        finished[(experiment_name, int(seed_text[1:]), name)] = result
        print(f"  {time.perf_counter() - began:5.0f} s: finished {key} in {time.perf_counter() - done.started:.0f} s"
              + (f": {result['error']}" if "error" in result else f": test {result['test']:.2%}"), flush=True)
        other = finished.get((experiment_name, int(seed_text[1:]), "projection" if name == "search" else "search"))
        if other is not None and "error" not in result and "error" not in other:
            found, warm = (result, other) if name == "search" else (other, result)
            print(seed_line(int(seed_text[1:]), found, warm) + f"   [{experiment_name}]", flush=True)


def _report_dead(task: Task) -> bool:
    """A process that ended without a result (killed, out of memory): say so and drop it."""
    print(f"  {task.experiment.name} s{task.seed} {task.name}: the process ended without a result "
          f"(exit code {task.process.exitcode})", flush=True)
    return False


def report(args: argparse.Namespace, finished: dict[tuple[str, int, str], dict[str, Any]]) -> int:
    """Each experiment's summary over the seeds whose both arms finished; the rows as JSON."""
    rows_by_experiment: dict[str, list[tuple[int, dict[str, Any], dict[str, Any]]]] = {}
    for (experiment_name, seed, name), found in sorted(finished.items()):
        warm = finished.get((experiment_name, seed, "projection"))
        if name == "search" and warm is not None and "error" not in found and "error" not in warm:
            rows_by_experiment.setdefault(experiment_name, []).append((seed, found, warm))
    for experiment_name, rows in rows_by_experiment.items():
        print(f"\n== {experiment_name}: {len(rows)} seed(s) with both arms finished: {[seed for seed, _, _ in rows]}")
        summarize(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"experiments": args.experiments, "trials": args.trials,
                                     "arms": {f"{e}/{n}/s{s}": r for (e, s, n), r in sorted(finished.items())}},
                                    indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
