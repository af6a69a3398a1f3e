"""Every file the tool writes goes through here: whole or not at all, never half.

A write goes to a temporary file with a unique name in the target's folder and is then moved over
the target with ``os.replace`` (atomic on POSIX and Windows). A reader sees the old file or the new
one; an interrupted write leaves the old file and no debris; two processes writing the same target
(workers sharing a study folder) never share a temporary file, and the last one to finish wins.

A target that is an existing directory is refused with :class:`OutputPathError` before anything is
written (``--out some/folder`` is a mistake to report, not a file to create beside it).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from autocompress.errors import AutocompressError

__all__ = ["OutputPathError", "atomic_path", "check_output_path", "write_bytes", "write_text"]


class OutputPathError(AutocompressError):
    """An output path that cannot be a file: an existing directory."""


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, refused if it names an existing directory."""
    target = Path(path)
    if target.is_dir():
        raise OutputPathError(f"{target} is a directory; give a file name inside it, e.g. {target / 'model.acz'}")
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path`` (same suffix, so writers that look at the suffix
    still work); when the body returns, it replaces ``path``. The folder is created if needed. If the
    body raises (Ctrl-C included), the temporary file is removed and ``path`` is left as it was."""
    target = check_output_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, mode)  # mkstemp makes it private; these files are meant to be read
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], content: bytes) -> Path:
    """Write ``content`` to ``path`` atomically; return the path."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(content)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)
