"""The dashboard in a real browser: ``autocompress dashboard`` serves a finished tiny study and headless
Chromium renders it.

The study's History page must show the study's name, the metric name ``val_accuracy`` and its best trial;
its Trials (List) page must list every trial. Screenshots of both go to ``tmp_path`` and, when the
environment names one, to the folder ``$AUTOCOMPRESS_ARTIFACTS``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest

from autocompress.runner import run_search
from tests._browser import dump_dom, find_chromium, screenshot, visible_text
from tests._tiny_search import settings_for

STUDY = "browser"
STARTUP_SECONDS = 60.0
BUDGETS_MS = (10_000, 30_000)  # virtual time for the React app; the second is a retry on a slow machine


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def autocompress_script() -> Path:
    """The installed ``autocompress`` console script of this interpreter's environment."""
    return Path(sys.executable).parent / "autocompress"


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for_study_id(process: subprocess.Popen[bytes], base: str, name: str, log: Path) -> int:
    """Poll the dashboard's API until it answers (bounded); the id it gives the study called ``name``."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"autocompress dashboard exited {process.returncode}: {log.read_text(errors='replace')}")
        try:
            studies = get_json(f"{base}/api/studies")["study_summaries"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
            continue
        ids = {study["study_name"]: study["study_id"] for study in studies}
        assert name in ids, f"the dashboard serves {sorted(ids)}, not {name!r}"
        return ids[name]
    pytest.fail(f"the dashboard did not answer on {base} within {STARTUP_SECONDS:.0f} s: {log.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the CLI and the optuna-dashboard it started: they share the session (process group) we gave them."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def dashboard(name: str, root: Path, log: Path) -> Iterator[tuple[str, int]]:
    """``autocompress dashboard`` on a free loopback port: its base URL and the study's id; always stopped."""
    port = free_port()
    script = autocompress_script()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PATH": f"{script.parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # the CLI looks optuna-dashboard up there
    command = [str(script), "dashboard", "--study", name, "--output-root", str(root), "--port", str(port), "--host", "127.0.0.1"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        yield base, wait_for_study_id(process, base, name, log)
    finally:
        stop(process)


def render_text(chromium: Path, url: str, ready: str) -> str:
    """The visible text of ``url`` once it shows ``ready``, with a longer virtual-time budget on a retry."""
    text = ""
    for budget in BUDGETS_MS:
        text = visible_text(dump_dom(chromium, url, budget_ms=budget))
        if ready in text:
            break
    return text


def js_number(value: float) -> str:
    """How the dashboard (JavaScript's ``String(number)``) writes a float; exact for the shortest repr."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def check_png(path: Path) -> None:
    """A real screenshot: a PNG of the window's size, not tiny, not one uniform colour."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is only {len(data)} bytes"
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        assert image.size == (1400, 1000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 32, f"{path} has only {len(colours)} colours: a blank page?"


def publish(path: Path) -> None:
    """Copy a screenshot into ``$AUTOCOMPRESS_ARTIFACTS`` when that is set."""
    folder = os.environ.get("AUTOCOMPRESS_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(folder) / path.name)


def requirements() -> Path:
    """Chromium's path; skips when Chromium or optuna-dashboard is not installed."""
    if importlib.util.find_spec("optuna_dashboard") is None or not (autocompress_script().parent / "optuna-dashboard").exists():
        pytest.skip("optuna-dashboard is not installed (pip install optuna-dashboard)")
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return chromium


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_dashboard_renders_a_finished_study_in_chromium(tiny_checkpoint: Path, synthetic_data_dir: Path, tmp_path: Path) -> None:
    chromium = requirements()
    settings = settings_for(tmp_path, synthetic_data_dir, tiny_checkpoint, study_name=STUDY, trials=4)
    run_search(settings, log=lambda _: None)
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / STUDY / 'study.db'}")
    assert study.metric_names == ["val_accuracy"]
    numbers = [trial.number for trial in study.trials]
    assert len(numbers) == 4

    with dashboard(STUDY, tmp_path, tmp_path / "dashboard.log") as (base, study_id):
        history_url = f"{base}/dashboard/studies/{study_id}"
        trials_url = f"{history_url}/trials"

        history = render_text(chromium, history_url, f"Best Trial (number={study.best_trial.number})")
        assert f"{STUDY} (id={study_id})" in history, history[:2000]  # the study's name in the app bar
        assert "History" in history and "val_accuracy" in history, history[:2000]  # the history plot's y axis
        assert f"Best Trial (number={study.best_trial.number})" in history, history[:2000]
        assert js_number(study.best_value) in history, history[:2000]

        listing = render_text(chromium, trials_url, f"{len(numbers)} Trials")
        assert f"{len(numbers)} Trials" in listing, listing[:2000]
        for number in numbers:
            assert f"Trial {number} " in listing + " ", f"trial {number} is not listed: {listing[:2000]}"
        assert "Best Trial" in listing

        shots = [screenshot(chromium, url, tmp_path / name, budget_ms=BUDGETS_MS[0])
                 for url, name in ((history_url, "dashboard.png"), (trials_url, "dashboard-trials.png"))]
    for shot in shots:
        check_png(shot)
        publish(shot)
