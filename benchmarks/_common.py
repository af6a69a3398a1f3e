"""What every benchmark script prints first and last: the machine line and the verdict."""

from __future__ import annotations

import platform
from datetime import datetime, timezone

import torch


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
