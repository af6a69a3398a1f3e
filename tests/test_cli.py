"""The installed ``autocompress`` command, run as a user runs it (subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autocompress.compress import compressible_layers
from autocompress.models import build_model, save_checkpoint
from autocompress.plan import Plan


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "autocompress.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def assert_clear_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = build_model("resnet20")
    save_checkpoint(folder / "r20.pt", model)
    save_checkpoint(folder / "r32.pt", build_model("resnet32"))
    Plan.uniform(compressible_layers(model), sparsity=0.8, bits=3, quantizer="clipq", model="resnet20").save(folder / "plan.yaml")
    return folder


def test_size_export_evaluate_agree_on_bytes(workspace: Path, synthetic_data_dir: Path) -> None:
    size = run_cli("size", "--plan", workspace / "plan.yaml", "--checkpoint", workspace / "r20.pt", "--target-size", "50KB")
    assert size.returncode == 0, size.stderr
    total = int(size.stdout.split("total")[-1].split("bytes")[0].replace(",", "").strip())
    assert "layer3.2.conv2" in size.stdout and "target 50,000 B (50.0 KB): fits" in size.stdout
    export = run_cli("export", "--plan", workspace / "plan.yaml", "--checkpoint", workspace / "r20.pt", "--out", workspace / "m.acz")
    assert export.returncode == 0, export.stderr
    assert os.path.getsize(workspace / "m.acz") == total
    evaluate = run_cli("evaluate", "--packed", workspace / "m.acz", "--data-dir", synthetic_data_dir, "--val-size", "200")
    assert evaluate.returncode == 0, evaluate.stderr
    assert "test top-1" in evaluate.stdout and f"{total:,} bytes" in evaluate.stdout


def test_apply_never_overwrites_its_input_plan(workspace: Path, synthetic_data_dir: Path, tmp_path: Path) -> None:
    plan = tmp_path / "mine.yaml"
    plan.write_text((workspace / "plan.yaml").read_text())
    original = plan.read_text()
    applied = run_cli("apply", "--plan", plan, "--checkpoint", workspace / "r20.pt", "--data-dir", synthetic_data_dir,
                      "--val-size", "200")
    assert applied.returncode == 0, applied.stderr
    assert plan.read_text() == original
    assert (tmp_path / "mine.acz").exists() and (tmp_path / "mine.plan.yaml").exists()


def test_train_then_apply_on_synthetic_data(workspace: Path, synthetic_data_dir: Path) -> None:
    data = ("--data-dir", synthetic_data_dir, "--val-size", "200")
    trained = run_cli("train", "--model", "resnet20", "--epochs", "0.5", "--batch-size", "64", "--out", workspace / "base.pt", *data)
    assert trained.returncode == 0, trained.stderr
    assert (workspace / "base.pt").exists()
    applied = run_cli("apply", "--plan", workspace / "plan.yaml", "--checkpoint", workspace / "base.pt",
                      "--finetune-epochs", "0.2", "--batch-size", "64", "--out", workspace / "applied.acz", *data)
    assert applied.returncode == 0, applied.stderr
    result = Plan.load(workspace / "applied.plan.yaml").result
    assert result["packed_bytes"] == os.path.getsize(workspace / "applied.acz")
    assert 0.0 <= result["accuracy"]["test"] <= 1.0


def test_bad_inputs_give_one_clear_error(workspace: Path, synthetic_data_dir: Path) -> None:
    plan, ckpt = workspace / "plan.yaml", workspace / "r20.pt"
    assert_clear_error(run_cli("export", "--plan", plan, "--checkpoint", ckpt, "--out", workspace / "x.acz", "--target-size", "1XB"),
                       "cannot read '1XB' as a size", "KiB")
    assert_clear_error(run_cli("export", "--plan", plan, "--checkpoint", ckpt, "--out", workspace / "x.acz", "--target-size", "10KB"),
                       "over the plan's target_bytes", "nothing was written")
    assert not (workspace / "x.acz").exists()
    typo = workspace / "typo.yaml"
    typo.write_text(plan.read_text().replace("bits: 3", "bitz: 3", 1))
    assert_clear_error(run_cli("size", "--plan", typo, "--checkpoint", ckpt), str(typo), "bitz")
    assert_clear_error(run_cli("size", "--plan", plan, "--checkpoint", workspace / "r32.pt"), "unexpected keys", "another model")
    assert_clear_error(run_cli("size", "--plan", plan, "--checkpoint", workspace / "absent.pt"), "absent.pt")
    truncated = workspace / "truncated.acz"
    run_cli("export", "--plan", plan, "--checkpoint", ckpt, "--out", truncated)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    assert_clear_error(run_cli("evaluate", "--packed", truncated, "--data-dir", synthetic_data_dir), "truncated or corrupted")
    assert_clear_error(run_cli("evaluate", "--model", "resnet20", "--checkpoint", ckpt, "--data-dir", workspace / "nodata"),
                       "nodata")


COMMANDS = ("train", "evaluate", "search", "compare", "report", "dashboard", "size", "inspect", "apply", "export")


def test_every_command_has_a_working_help_that_shows_the_defaults() -> None:
    from autocompress.cli import COMMANDS as REGISTERED

    assert {command.name for command in REGISTERED} == set(COMMANDS)  # a new command joins this test
    command = Path(sys.executable).parent / "autocompress"  # the installed console script
    for name in ("", *COMMANDS):
        result = subprocess.run([str(command), *([name] if name else []), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (name, result.stderr)
        assert result.stdout.startswith("usage: autocompress"), name
    search = subprocess.run([str(command), "search", "--help"], capture_output=True, text=True, timeout=120).stdout
    assert "(default: 0.95)" in search.replace("\n", " ").replace("  ", " ")  # --max-sparsity shows its real default
    assert "25 % of it" in " ".join(search.split())  # a % in a help text once broke argparse
