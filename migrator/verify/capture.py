"""Capture a query set from pg_stat_statements: what a version really runs.

Two ways in: read the statements a live database's pg_stat_statements holds (the old
version's production queries, constants already normalised to ``$n``), or run a
command (the new version's test suite, say) against a fresh embedded PostgreSQL started
with pg_stat_statements loaded, its URL in ``DATABASE_URL``, and capture what it ran.
The result is written as a query set `migrator check` reads: one ``.sql`` file, each
statement under a ``-- name:`` comment.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pglast
import psycopg
from pglast import ast

from migrator.db.connection import redact
from migrator.db.embedded import EmbeddedPostgres, start
from migrator.errors import DatabaseError, UsageError
from migrator.observer import NULL_OBSERVER, Observer
from migrator.verify.queries import relations
from migrator.verify.scratch import libpq_url

# Schemas whose queries are the driver's or migrator's own, not the application's.
_SYSTEM_SCHEMAS = {"pg_catalog", "information_schema", "migrator"}


@dataclass
class CaptureResult:
    """What was captured and where it was written."""

    file: Path
    statements: int
    skipped: int
    command_status: int | None = None
    skipped_reasons: dict[str, int] = field(default_factory=dict)


def _keep(text: str) -> str | None:
    """None when the statement belongs in a query set, else why it is left out."""
    try:
        stmts = pglast.parse_sql(text)
    except pglast.parser.ParseError:
        return "does not parse"
    if len(stmts) != 1:
        return "several statements"
    stmt = stmts[0].stmt
    if stmt is None:
        return "empty"
    if not isinstance(stmt, ast.SelectStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt) and (
        type(stmt).__name__ != "MergeStmt"
    ):
        return "not a query (DDL, SET, transaction control)"
    names = list(relations(stmt))
    if not names:
        return "reads no table"
    if all(
        (schema in _SYSTEM_SCHEMAS) or (schema is None and name.startswith("pg_"))
        for schema, name in names
    ):
        return "reads only system catalogs"
    return None


def capture_from(url: str, out: Path, *, name: str = "captured.sql") -> CaptureResult:
    """Write the statements pg_stat_statements holds for the database at ``url``."""
    try:
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            installed = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
            ).fetchone()
            if installed is None:
                raise UsageError(
                    f"pg_stat_statements is not installed in {redact(url)}: add it to "
                    "shared_preload_libraries and run CREATE EXTENSION pg_stat_statements"
                )
            rows = conn.execute(
                "SELECT s.queryid, s.query, s.calls FROM pg_stat_statements s "
                "WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "ORDER BY s.calls DESC, s.queryid"
            ).fetchall()
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot read pg_stat_statements in {redact(url)}: {str(exc).strip().splitlines()[0]}"
        ) from None
    return write_query_set(rows, out, name=name)


def write_query_set(rows: Sequence[tuple[Any, ...]], out: Path, *, name: str) -> CaptureResult:
    """Write (queryid, query, calls) rows that belong in a query set to ``out/name``."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    kept: list[str] = []
    reasons: dict[str, int] = {}
    seen: set[str] = set()
    for queryid, query, calls in rows:
        text = str(query).strip().rstrip(";").strip()
        if not text or text in seen:
            continue
        seen.add(text)
        why = _keep(text)
        if why is not None:
            reasons[why] = reasons.get(why, 0) + 1
            continue
        qid = (
            f"q{int(queryid) & 0xFFFFFFFFFFFFFFFF:016x}"
            if queryid is not None
            else f"q{len(kept) + 1}"
        )
        kept.append(f"-- name: {qid}\n-- calls: {calls}\n{text};\n")
    header = (
        "-- Captured by `migrator queries capture` from pg_stat_statements.\n"
        "-- Constants appear as $n placeholders, as pg_stat_statements normalises them.\n\n"
    )
    target.write_text(header + "\n".join(kept), encoding="utf-8")
    return CaptureResult(target, len(kept), sum(reasons.values()), skipped_reasons=reasons)


def start_with_pg_stat_statements(folder: Path) -> EmbeddedPostgres:
    """An embedded server whose postgresql.conf preloads pg_stat_statements."""
    server = start(folder)
    # shared_preload_libraries takes effect only at server start: set it, then restart.
    server.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    server.psql("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
    server.stop()
    return start(folder)


def capture_command(
    command: Sequence[str],
    out: Path,
    *,
    observer: Observer = NULL_OBSERVER,
    name: str = "captured.sql",
    env: Mapping[str, str],
) -> CaptureResult:
    """Run ``command`` against a fresh embedded PostgreSQL (``DATABASE_URL``) and capture it.

    ``env`` is the command's environment (the CLI's own), given ``DATABASE_URL``."""
    if not command:
        raise UsageError("no command to run: `migrator queries capture --out DIR -- COMMAND...`")
    with tempfile.TemporaryDirectory(prefix="migrator-capture-") as tmp:
        server = start_with_pg_stat_statements(Path(tmp))
        try:
            app_url = server.create_database("app")
            with psycopg.connect(app_url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                conn.execute("SELECT pg_stat_statements_reset()")
            observer.info(f"running {' '.join(command)} with DATABASE_URL={app_url}")
            child_env = dict(env)
            child_env["DATABASE_URL"] = app_url
            try:
                status = subprocess.run(list(command), env=child_env, check=False).returncode
            except OSError as exc:
                raise UsageError(f"cannot run {command[0]}: {exc}") from None
            result = capture_from(app_url, out, name=name)
            result.command_status = status
            return result
        finally:
            server.stop()


__all__ = [
    "CaptureResult",
    "capture_command",
    "capture_from",
    "start_with_pg_stat_statements",
    "write_query_set",
]
