"""What every benchmark script prints first and last: the machine line and the verdict."""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def machine_line(script: str, extra: str = "") -> str:
    """``# <script>  <UTC time>  <machine>, <threads>, torch <version>[, extra]``."""
    tail = f", {extra}" if extra else ""
    return (
        f"# {script}  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.machine()} "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}{tail}"
    )


def verdict(passed: bool, message: str) -> int:
    """Print ``VERDICT: PASS|FAIL: message`` and return the script's exit code."""
    print(f"\nVERDICT: {'PASS' if passed else 'FAIL'}: {message}")
    return 0 if passed else 1


def add_ab_arguments(parser: argparse.ArgumentParser, *, output_root: str, common: str, common_help: str) -> None:
    """The flags every two-arm A/B of searches takes: the preset, the seeds, the final fine-tune, what both arms
    share, where the arms' studies are kept (so that a rerun resumes finished arms), the data and the verbosity."""
    parser.add_argument("--config", type=Path, default=REPO / "studies" / "resnet20-50KB.yaml")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--final-epochs", type=float, default=2.0)
    parser.add_argument("--common", default=common, help=common_help)
    parser.add_argument("--output-root", type=Path, default=REPO / "studies" / output_root,
                        help="kept, so that a rerun resumes finished arms (delete it to run them again)")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--verbose", action="store_true")


def run_arm(args: argparse.Namespace, name: str, seed: int, overrides: dict[str, Any]) -> tuple[Any, dict[str, Any], float]:
    """Run (or resume) one arm of an A/B as ``autocompress search`` with the preset ``args.config``, the seed, the
    final fine-tune and ``overrides``, in the study ``<preset>-<name>-s<seed>``; returns its settings, the
    ``result`` its ``best.yaml`` records, and its wall time in minutes."""
    import yaml

    from autocompress.runner import load_settings, run_search

    settings = load_settings(args.config, {
        "seed": seed, "final_epochs": args.final_epochs, "output_root": str(args.output_root),
        "study_name": f"{args.config.stem}-{name}-s{seed}", "data_dir": str(args.data_dir), **overrides})
    started = time.perf_counter()
    outcome = run_search(settings, log=lambda message: print(f"    {message}", flush=True) if args.verbose else None)
    assert outcome.best_plan is not None, f"{name} s{seed}: no plan"
    result = yaml.safe_load((settings.study_dir / "best.yaml").read_text())["result"]
    return settings, result, (time.perf_counter() - started) / 60
