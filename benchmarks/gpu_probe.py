"""How many fine-tunes one device runs at once: fake-quant training steps per second, alone and side by side.

Small CIFAR models leave a big GPU mostly idle (a step is thousands of small kernels), so several
processes fine-tuning at once finish more work per second than one. For each model and each number
of processes P, starts P processes (spawned), each fine-tuning the model under a 50 KB-like plan
(clipq, 85 % sparse, 3 bits) with distillation from the dense model, on random images the size of
CIFAR-10, through the engine's own ``train`` (the loop every search trial and final fine-tune uses);
after a warm-up they all start together and count steps for ``--seconds``. Prints steps per second per
process and in all, and writes them as JSON for ``gpu_ab.py``, which picks its number of parallel arms
from them.

    python benchmarks/gpu_probe.py --device cuda --out /tmp/probe.json            # on the GPU machine
    python benchmarks/gpu_probe.py --device cpu --levels 1,2 --seconds 3 --out /tmp/probe.json   # the code path
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine_line

from autocompress.compress import compressible_layers
from autocompress.data import TensorSet
from autocompress.engine import Distillation, resolve_device
from autocompress.models import build_model
from autocompress.pipeline import finetune_under_plan_
from autocompress.plan import Plan

IMAGES = 8192  # 64 steps of 128 per epoch: the timed run never reaches its schedule's end


class _TimeUp(Exception):
    """Raised from the step callback to end a timed run."""


def _count_steps(model_name: str, device_name: str, seconds: float, batch_size: int, threads: int,
                 start: Any, results: Any) -> None:
    """One process: warm up, wait for the others, then count fine-tuning steps for ``seconds``."""
    torch.set_num_threads(threads)
    device = resolve_device(device_name)
    generator = torch.Generator().manual_seed(0)
    data = TensorSet(torch.randint(0, 256, (IMAGES, 3, 32, 32), dtype=torch.uint8, generator=generator),
                     torch.randint(0, 10, (IMAGES,), generator=generator))
    student, teacher = build_model(model_name), build_model(model_name).eval()
    plan = Plan.uniform(compressible_layers(student), sparsity=0.85, bits=3, quantizer="clipq")
    steps = 0
    deadline = float("inf")

    def on_step(step: int) -> None:
        nonlocal steps
        steps = step
        if time.perf_counter() >= deadline:
            raise _TimeUp

    finetune_under_plan_(student, plan, data, device=device, epochs=0.1, batch_size=batch_size, progress=False,
                         distillation=Distillation(teacher))  # the warm-up: kernels, allocator, cuDNN choices
    start.wait()
    began = time.perf_counter()
    deadline = began + seconds
    with contextlib.suppress(_TimeUp):
        finetune_under_plan_(student, plan, data, device=device, epochs=1000, batch_size=batch_size, progress=False,
                             distillation=Distillation(teacher), on_step=on_step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    results.put(steps / (time.perf_counter() - began))


def measure(model_name: str, processes: int, args: argparse.Namespace) -> dict[str, float]:
    """Steps per second of each of ``processes`` processes fine-tuning at once, and their sum."""
    context = mp.get_context("spawn")
    start, results = context.Barrier(processes), context.Queue()
    threads = max(1, args.cores // processes)
    workers = [context.Process(target=_count_steps, args=(model_name, args.device, args.seconds, args.batch_size,
                                                          threads, start, results), daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        rates = [results.get(timeout=args.seconds + 300) for _ in workers]
    finally:  # a worker that failed or hangs must not outlive the probe (it would load the machine for hours)
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
    return {"processes": processes, "per_process": sum(rates) / processes, "total": sum(rates)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="resnet20,resnet56")
    parser.add_argument("--levels", default="1,6,12,16", help="numbers of processes to try (the first model)")
    parser.add_argument("--levels-others", default="1", help="numbers of processes to try (the other models)")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per level")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cores", type=int, default=torch.get_num_threads(), help="CPU threads shared out among the processes")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(machine_line("gpu_probe.py", f"device {args.device}, batch {args.batch_size}"), flush=True)
    found: dict[str, list[dict[str, float]]] = {}
    for index, model_name in enumerate(args.models.split(",")):
        found[model_name] = []
        for processes in (int(level) for level in (args.levels if index == 0 else args.levels_others).split(",")):
            row = measure(model_name, processes, args)
            found[model_name].append(row)
            print(f"{model_name}: {processes:2d} process(es): {row['per_process']:6.1f} steps/s each, "
                  f"{row['total']:7.1f} in all", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": args.device, "batch_size": args.batch_size, "models": found}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
