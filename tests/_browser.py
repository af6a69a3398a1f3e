"""Headless Debian Chromium for the tests: render a page, read its DOM and its visible text, take a screenshot.

Every run gets a fresh profile, resolves no host but 127.0.0.1 and is bounded by a timeout.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
APT_LOG = Path("/tmp/apt.log")  # where a concurrent `apt-get install chromium` logs; it ends with `rc=<status>`
RUN_SECONDS = 90.0

HEADLESS_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no network other than loopback
)


def find_chromium(wait_seconds: float = 300.0) -> Path | None:
    """The Chromium binary, waiting (bounded) for an apt install that is still running; None if there is none."""
    deadline = time.monotonic() + wait_seconds
    while APT_LOG.exists() and "rc=" not in APT_LOG.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(2.0)
    if CHROMIUM.exists():
        return CHROMIUM
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else None


def _run(chromium: Path, url: str, extra: list[str], budget_ms: int) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [str(chromium), *HEADLESS_FLAGS, f"--user-data-dir={profile}",
                   f"--virtual-time-budget={budget_ms}", *extra, url]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_SECONDS, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"chromium exited {result.returncode} on {url}: {result.stderr[-2000:]}")
    return result


def dump_dom(chromium: Path, url: str, budget_ms: int = 10_000) -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time (scripts run, fetches answered)."""
    return _run(chromium, url, ["--dump-dom"], budget_ms).stdout


def screenshot(chromium: Path, url: str, path: Path, size: tuple[int, int] = (1400, 1000), budget_ms: int = 10_000) -> Path:
    """A PNG of ``url`` at ``size`` after ``budget_ms`` of virtual time."""
    _run(chromium, url, [f"--screenshot={path}", f"--window-size={size[0]},{size[1]}"], budget_ms)
    return path


def visible_text(dom: str) -> str:
    """The text of a DOM's body, without scripts and styles, whitespace collapsed to single spaces."""
    body = dom[dom.find("<body"):] if "<body" in dom else dom
    body = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", body, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()
