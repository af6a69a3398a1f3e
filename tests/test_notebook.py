"""notebooks/walkthrough.ipynb runs headless on a tiny finished study and shows what the search found.

The notebook is kept in the repository without outputs. The slow test builds a finished four-trial
study of the tiny user model (``tinynet:tiny``) on the synthetic data set in ``tmp_path``, then executes
the notebook with nbclient in a kernel of this very interpreter, from ``notebooks/`` as the working
directory, pointed at the study through ``AUTOCOMPRESS_STUDY_DIR`` (study name and storage are left to
the notebook's defaults: the folder's name and its ``study.db``). The executed copy is kept as
``tmp_path/walkthrough-executed.ipynb`` for a look after a failure.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest
from ipykernel.kernelspec import install as install_kernelspec
from jupyter_client.kernelspec import KernelSpecManager
from nbformat import NotebookNode

from autocompress.runner import run_search
from tests._tiny_search import settings_for

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"
KERNEL = "python3"
CELL_TIMEOUT_S = 120
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = 3  # Pareto front, per-layer allocation, size breakdown
TOTAL_LINE = re.compile(r"total: ([\d,]+) bytes = os\.path\.getsize\(best\.acz\) = ([\d,]+) bytes")


def test_the_notebook_is_kept_without_outputs_and_reads_its_parameters_first() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    for variable in ("AUTOCOMPRESS_STUDY_DIR", "AUTOCOMPRESS_STUDY_NAME", "AUTOCOMPRESS_STORAGE"):
        assert f'os.environ.get("{variable}"' in code[0].source
    assert notebook.metadata["kernelspec"]["name"] == KERNEL


@pytest.fixture()
def finished_study(tmp_path: Path, synthetic_data_dir: Path, tiny_checkpoint: Path) -> Path:
    """A finished search folder: study.db, best.yaml and best.acz (3 KB forces some sparsity)."""
    settings = settings_for(tmp_path / "studies", synthetic_data_dir, tiny_checkpoint, study_name="walk", trials=4,
                            target_size="3KB")
    run_search(settings, log=lambda _: None)
    for name in ("study.db", "best.yaml", "best.acz"):
        assert (settings.study_dir / name).is_file()
    return settings.study_dir


@pytest.fixture()
def kernel_of_this_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``python3`` kernelspec that runs ``sys.executable``, found before any other one on the machine."""
    prefix = tmp_path / "jupyter"
    install_kernelspec(kernel_name=KERNEL, prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))  # searched before user and system dirs
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))  # connection files
    argv = KernelSpecManager().get_kernel_spec(KERNEL).argv
    assert Path(argv[0]).resolve() == Path(sys.executable).resolve(), argv
    return KERNEL


def kernel_env(study_dir: Path, tiny_module: Path) -> dict[str, str]:
    """This process's environment with the study folder set, single-threaded, the tiny model importable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AUTOCOMPRESS_") and key != "MPLBACKEND"}
    paths = [str(tiny_module), str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(AUTOCOMPRESS_STUDY_DIR=str(study_dir), OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(paths))
    return env


def outputs_of(notebook: NotebookNode) -> list[NotebookNode]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_walkthrough_runs_on_a_finished_study_and_accounts_for_every_byte(
    finished_study: Path, kernel_of_this_python: str, tiny_module: Path, tmp_path: Path
) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel_of_this_python,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # the kernel's working directory
    )
    try:
        client.execute(env=kernel_env(finished_study, tiny_module))  # a cell that raises fails here
    finally:
        nbformat.write(notebook, tmp_path / "walkthrough-executed.ipynb")

    outputs = outputs_of(notebook)
    assert not [output for output in outputs if output.output_type == "error"]
    text = "\n".join(
        output.get("text", "") if output.output_type == "stream" else output.get("data", {}).get("text/plain", "")
        for output in outputs
    )
    assert f"study 'walk', files in {finished_study.resolve()}" in text  # name defaults to the folder's
    assert "target 3,000 bytes, 4 trials" in text
    assert "best feasible: trial #" in text  # the library's summary
    assert "Pareto front (smallest first)" in text
    assert "plan from best.yaml: 3 compressed layers" in text

    file_bytes = os.path.getsize(finished_study / "best.acz")
    totals = TOTAL_LINE.findall(text)
    assert len(totals) == 1, text
    assert [int(number.replace(",", "")) for number in totals[0]] == [file_bytes, file_bytes]
    for part in ("values", "index", "codebook", "batch norms (fp16)", "header + checksum"):
        assert part in text

    images = [base64.b64decode(output.data["image/png"]) for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= PLOTS
    assert all(image.startswith(PNG_MAGIC) and len(image) > 5_000 for image in images)
