"""README's bad-input table, row by row, through the installed ``autocompress`` command.

Each row of the table between ``<!-- bad-input -->`` and ``<!-- /bad-input -->`` in README.md is run
here: a flag row as the command line it shows, a preset row as ``autocompress search --config
preset.yaml`` with the YAML it shows. Each must exit with code 2, print nothing but one ``error:``
line on stderr containing the row's message (up to a trailing ``…``), and write nothing. The table
and the tests cannot drift apart: the tests read the table.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from autocompress.compress import compressible_layers
from autocompress.models import build_model, save_checkpoint
from autocompress.pack import export_packed
from autocompress.plan import Plan

README = Path(__file__).resolve().parents[1] / "README.md"
COMMAND = Path(sys.executable).parent / "autocompress"  # the console script pip installed
START, END = "<!-- bad-input -->", "<!-- /bad-input -->"


@dataclass(frozen=True)
class Row:
    case: str
    given_as: str  # "flag" or "preset"
    source: str  # the command line after `autocompress`, or the preset's YAML (lines joined by "; ")
    message: str

    @property
    def arguments(self) -> list[str]:
        return shlex.split(self.source) if self.given_as == "flag" else ["search", "--config", "preset.yaml"]

    @property
    def preset(self) -> str:
        return "\n".join(part.strip() for part in self.source.split(";")) + "\n"


def table_rows() -> list[Row]:
    text = README.read_text()
    assert START in text and END in text, f"README.md has no bad-input table between {START} and {END}"
    rows = []
    for line in text[text.index(START):text.index(END)].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("case", "---") or set(cells[0]) <= {"-"}:
            continue
        case, given_as, source, message = cells
        rows.append(Row(case, given_as, unquote(source), unquote(message)))
    return rows


def unquote(cell: str) -> str:
    return re.sub(r"^`|`$", "", cell).replace("\\|", "|")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("bad-input"))


def make_workspace(folder: Path) -> Path:
    """A folder with what the rows refer to: checkpoints, plans, a packed file, broken files."""
    torch.manual_seed(0)
    model = build_model("resnet20")
    save_checkpoint(folder / "r20.th", model)
    save_checkpoint(folder / "r32.th", build_model("resnet32"))
    plan = Plan.uniform(compressible_layers(model), sparsity=0.8, bits=3, model="resnet20")
    plan.save(folder / "plan.yaml")
    (folder / "typo-plan.yaml").write_text((folder / "plan.yaml").read_text().replace("bits: 3", "bitz: 3", 1))
    export_packed(model, plan, folder / "m.acz", model_spec="resnet20", num_classes=10)
    (folder / "corrupted.acz").write_bytes((folder / "m.acz").read_bytes()[:-100])
    (folder / "broken.yaml").write_text("target_size: 50KB\nsampler: [tpe\n")
    (folder / "typo.yaml").write_text("target_size: 50KB\nmax_sparsty: 0.9\n")
    return folder


def run_row(row: Row, folder: Path) -> subprocess.CompletedProcess[str]:
    work = folder / re.sub(r"\W+", "-", f"{row.given_as}-{row.case}")
    work.mkdir()
    for item in folder.iterdir():
        if item.is_file():
            (work / item.name).symlink_to(item)
    if row.given_as == "preset":
        (work / "preset.yaml").write_text(row.preset)
    return subprocess.run([str(COMMAND), *row.arguments], cwd=work, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_the_table_covers_every_bounded_setting_as_a_flag_and_in_a_preset() -> None:
    from autocompress.search import SETTING_OPTIONS

    rows = table_rows()
    flags = {row.source for row in rows if row.given_as == "flag"}
    presets = "\n".join(row.preset for row in rows if row.given_as == "preset")
    unbounded = {"model", "storage", "distill", "warm_start", "worker", "checkpoint", "data_dir", "output_root", "study_name"}
    for name, declared in SETTING_OPTIONS.items():
        if name in unbounded:
            continue
        assert any(declared.flag in source.split() for source in flags), f"no flag row for {declared.flag}"
        keys = {name, (declared.flag or "").lstrip("-").replace("-", "_")}
        assert any(re.search(rf"^{key}:", presets, re.M) for key in keys), f"no preset row for {name}"


def test_every_row_gives_one_error_line_and_exit_code_2(workspace: Path) -> None:
    rows = table_rows()
    assert len(rows) >= 80
    with ThreadPoolExecutor(max_workers=2) as pool:  # each run imports torch: two at a time on two cores
        results = list(pool.map(lambda row: (row, run_row(row, workspace)), rows))
    problems = []
    for row, result in results:
        expected = row.message.removesuffix("…").strip()
        lines = result.stderr.strip().splitlines()
        if result.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or expected not in lines[0]:
            problems.append(f"{row.given_as} row {row.case!r}: exit {result.returncode}, stderr {result.stderr.strip()!r}")
    assert not problems, "\n".join(problems)
    assert not list(workspace.glob("*/studies")), "a refused command wrote a study folder"
    assert not (workspace / "m.acz").with_name("x.acz").exists()
