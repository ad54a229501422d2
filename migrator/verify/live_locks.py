"""Why `migrator check --database-url` could not read the live schema in time.

pg_dump locks every table it dumps (ACCESS SHARE) and, given ``--lock-wait-timeout``,
gives up on the first it cannot lock in time. Its error is read here (the LOCK TABLE it
ran, parsed by pglast) and the live database is asked which of those tables another
session holds ACCESS EXCLUSIVE on, and what that session runs: one line, exit 5.
"""

from __future__ import annotations

import pglast
import psycopg
from pglast import ast

from migrator.db.connection import libpq_url, redact
from migrator.durations import format_duration
from migrator.errors import LockNotAcquired
from migrator.sqltext import ident

_QUERY_WAS = "Query was:"


def locked_tables(stderr: str) -> list[str] | None:
    """The tables of the LOCK TABLE statement pg_dump's error reports (``Query was:``), as
    qualified, quoted names; None when the error is not a lock that timed out."""
    if "timeout" not in stderr:
        return None
    for line in stderr.splitlines():
        _, found, query = line.partition(_QUERY_WAS)
        if not found:
            continue
        try:
            (raw,) = pglast.parse_sql(query.strip())
        except (pglast.parser.ParseError, ValueError):
            return None
        stmt = raw.stmt
        if not isinstance(stmt, ast.LockStmt):
            return None
        return [
            ident(rv.schemaname, rv.relname) if rv.schemaname else ident(rv.relname)
            for rv in stmt.relations or ()
            if isinstance(rv, ast.RangeVar) and rv.relname
        ]
    return None


def holder(url: str, tables: list[str]) -> tuple[str, str] | None:
    """(table, who) for the session holding (or queued ahead for) ACCESS EXCLUSIVE on one
    of ``tables``: ``pid 123 holds ACCESS EXCLUSIVE (idle in transaction: LOCK ...)``;
    None when none does any more (it let go since) or the question fails."""
    try:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT l.relation::regclass::text, l.pid, l.granted, a.state, "
                "left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80) "
                "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' "
                "AND l.database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) "
                "AND l.pid IS DISTINCT FROM pg_backend_pid() "
                "AND l.relation IN (SELECT to_regclass(t) FROM unnest(%s::text[]) AS t) "
                "ORDER BY l.granted DESC, l.pid LIMIT 1",
                (tables,),
            ).fetchone()
    except psycopg.Error:
        return None
    if row is None:
        return None
    table, pid, granted, state, query = row
    who = "a prepared transaction" if pid is None else f"pid {pid}"
    verb = "holds" if granted else "waits ahead for"
    doing = f" ({state}: {query})" if state and query else (f" ({state})" if state else "")
    return str(table), f"{who} {verb} ACCESS EXCLUSIVE on it{doing}"


def dump_refused(url: str, stderr: str, lock_timeout: float) -> LockNotAcquired | None:
    """The refusal to raise for a pg_dump that could not lock a table within
    ``lock_timeout``; None for any other failure of pg_dump."""
    tables = locked_tables(stderr)
    if tables is None:
        return None
    found = holder(url, tables)
    if found is not None:
        table, who = found
        what = f"{table}: {who}"
    elif len(tables) == 1:
        what = f"{tables[0]}: another session holds a lock on it that conflicts with reading it"
    else:
        what = (
            f"one of the {len(tables)} tables it locks: another session held a lock that "
            "conflicts with reading it"
        )
    return LockNotAcquired(
        f"check could not read the live schema of {redact(url)}: pg_dump waited "
        f"lock_timeout {format_duration(lock_timeout)} for ACCESS SHARE on {what}; nothing "
        "was changed; rerun when it is done"
    )


__all__ = ["dump_refused", "holder", "locked_tables"]
