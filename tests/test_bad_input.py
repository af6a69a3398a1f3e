"""The bad-input table (``tests/data/bad_input.md``), row by row, through the installed ``autocompress`` command.

Each row of the table between ``<!-- bad-input -->`` and ``<!-- /bad-input -->`` in that file is run
here: a flag row as the command line it shows, a preset row as ``autocompress search --config
preset.yaml`` with the YAML it shows. Each must exit with code 2, print nothing but one ``error:``
line on stderr containing the row's message (up to a trailing ``…``), and write nothing. The table
and the tests cannot drift apart: the tests read the table.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import struct
import subprocess
import sys
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from autocompress.compress import compressible_layers
from autocompress.data import write_synthetic_cifar
from autocompress.models import build_model, save_checkpoint
from autocompress.pack import export_packed
from autocompress.pack._cost import CODED_FIELDS
from autocompress.pack._size import PREFIX, SUFFIX
from autocompress.plan import Plan

TABLE = Path(__file__).resolve().parent / "data" / "bad_input.md"
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
    text = TABLE.read_text()
    assert START in text and END in text, f"{TABLE} has no bad-input table between {START} and {END}"
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
    folder = make_workspace(tmp_path_factory.mktemp("bad-input"))
    for kind in ("here", "processes"):
        (folder / kind).mkdir()
        for item in list(folder.iterdir()):
            if item.is_file() or item.name == "data":
                (folder / kind / item.name).symlink_to(item)
    return folder


def make_workspace(folder: Path) -> Path:
    """A folder with what the rows refer to: checkpoints, plans, a packed file, broken files."""
    torch.manual_seed(0)
    model = build_model("resnet20")
    save_checkpoint(folder / "r20.th", model)
    save_checkpoint(folder / "r32.th", build_model("resnet32"))
    broken = build_model("resnet20")
    with torch.no_grad():
        broken.conv1.weight[0, 0, 0, 0] = float("nan")
    save_checkpoint(folder / "nan.th", broken)
    write_synthetic_cifar(folder / "data")
    plan = Plan.uniform(compressible_layers(model), sparsity=0.8, bits=3, model="resnet20")
    plan.save(folder / "plan.yaml")
    (folder / "typo-plan.yaml").write_text((folder / "plan.yaml").read_text().replace("bits: 3", "bitz: 3", 1))
    export_packed(model, plan, folder / "m.acz", model_spec="resnet20", num_classes=10)
    (folder / "corrupted.acz").write_bytes((folder / "m.acz").read_bytes()[:-100])
    (folder / "crafted.acz").write_bytes(crafted_packed_file((folder / "m.acz").read_bytes()))
    (folder / "broken.yaml").write_text("target_size: 50KB\nsampler: [tpe\n")
    (folder / "typo.yaml").write_text("target_size: 50KB\nmax_sparsty: 0.9\n")
    return folder


def crafted_packed_file(content: bytes) -> bytes:
    """``content`` with its first layer's kept count raised by one and the checksum made valid again."""
    body = content[:-4]
    offset = PREFIX.size + PREFIX.unpack_from(body)[2] + SUFFIX.size + 1  # conv1's codes entry, after its kind byte
    fields = list(CODED_FIELDS.unpack_from(body, offset))
    fields[4] += 1
    body = body[:offset] + CODED_FIELDS.pack(*fields) + body[offset + CODED_FIELDS.size:]
    return body + struct.pack("<I", zlib.crc32(body))


def row_folder(row: Row, folder: Path) -> Path:
    work = folder / re.sub(r"\W+", "-", f"{row.given_as}-{row.case}")
    work.mkdir()
    for item in folder.iterdir():
        if item.is_file() or item.name == "data":
            (work / item.name).symlink_to(item)
    if row.given_as == "preset":
        (work / "preset.yaml").write_text(row.preset)
    return work


def run_row(row: Row, folder: Path) -> subprocess.CompletedProcess[str]:
    """The row through the installed command, in a process of its own."""
    return subprocess.run([str(COMMAND), *row.arguments], cwd=row_folder(row, folder), capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def run_row_here(row: Row, folder: Path) -> subprocess.CompletedProcess[str]:
    """The row through the command's entry point in this process (what the installed command calls), so that a
    hundred rows do not import torch a hundred times; a traceback is what an uncaught exception would print."""
    from autocompress.cli import main

    work, before = row_folder(row, folder), Path.cwd()
    stdout, stderr = io.StringIO(), io.StringIO()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(row.arguments)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(row.arguments, code, stdout.getvalue(), stderr.getvalue())


def test_the_table_covers_every_bounded_setting_as_a_flag_and_in_a_preset() -> None:
    from autocompress.settings import SETTING_OPTIONS

    rows = table_rows()
    flags = {row.source for row in rows if row.given_as == "flag"}
    presets = "\n".join(row.preset for row in rows if row.given_as == "preset")
    unbounded = {"model", "storage", "distill", "warm_start", "worker", "checkpoint", "data_dir", "output_root", "study_name"}
    for name, declared in SETTING_OPTIONS.items():
        if name in unbounded:
            continue
        given = f"--set {name}=" if declared.expert else declared.flag
        assert any(given in source for source in flags), f"no flag row for {given}"
        keys = {name, (declared.flag or "").lstrip("-").replace("-", "_")}
        assert any(re.search(rf"^{key}:", presets, re.M) for key in keys), f"no preset row for {name}"


ROWS_AS_PROCESSES = 6  # the first rows of each kind also run through the installed command, in processes of their own


def test_every_row_gives_one_error_line_and_exit_code_2(workspace: Path) -> None:
    rows = table_rows()
    assert len(rows) >= 80
    results = [(row, run_row_here(row, workspace / "here")) for row in rows]
    sampled = [row for row in rows if row.given_as == "flag"][:ROWS_AS_PROCESSES] + [
        row for row in rows if row.given_as == "preset"][:ROWS_AS_PROCESSES]
    with ThreadPoolExecutor(max_workers=2) as pool:  # each run imports torch: two at a time on two cores
        results += list(pool.map(lambda row: (row, run_row(row, workspace / "processes")), sampled))
    problems = []
    for row, result in results:
        expected = row.message.removesuffix("…").strip()
        lines = result.stderr.strip().splitlines()
        if result.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or expected not in lines[0]:
            problems.append(f"{row.given_as} row {row.case!r}: exit {result.returncode}, stderr {result.stderr.strip()!r}")
    assert not problems, "\n".join(problems)
    assert not list(workspace.glob("*/*/studies")), "a refused command wrote a study folder"
    assert not (workspace / "m.acz").with_name("x.acz").exists()
