"""A throwaway PostgreSQL server on loopback for the storage tests (Debian's ``postgresql`` package).

``.ci/run`` installs the package; here the server is started in a temporary folder on a free port
with trust authentication for local connections, and stopped at the end. As root, the server runs
as the ``postgres`` user the package creates (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_SECONDS = 60


def postgres_bin() -> Path | None:
    """The folder of ``initdb``/``pg_ctl`` (Debian keeps them out of PATH), or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").exists():
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def why_unavailable() -> str | None:
    """None when a server can be started here, else the reason."""
    if postgres_bin() is None:
        return "PostgreSQL server not installed (Debian: apt-get install postgresql; .ci/run installs it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server in a new temporary folder; yield the URL of an empty database; stop it and
    remove the folder. (Not under pytest's tmp_path: that is private to root, and the server runs
    as ``postgres``.)"""
    binaries = postgres_bin()
    assert binaries is not None
    folder = Path(tempfile.mkdtemp(prefix="autocompress-postgres-"))
    data, sockets = folder / "data", folder / "sockets"
    for path in (folder, sockets):
        path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        for path in (folder, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
    port = free_port()
    run = lambda *command: subprocess.run(_as_server_user([*map(str, command)]), check=True,  # noqa: E731
                                          capture_output=True, text=True, timeout=START_SECONDS)
    run(binaries / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off -c max_connections=50"
    run(binaries / "pg_ctl", "-D", data, "-o", options, "-l", folder / "server.log", "-w", "-t", START_SECONDS, "start")
    try:
        run(binaries / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "autocompress")
        yield f"postgresql://postgres@127.0.0.1:{port}/autocompress"
    finally:
        subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=START_SECONDS)
        shutil.rmtree(folder, ignore_errors=True)
