"""The conditions a contract waits for, each checked and reported on its own.

The contract removes what only the old version needed, so it may run only once the old
version is gone: the release is complete and `not_before` has passed, no connection of
the old version is open, no query since completion touched what is about to go, and the
traffic backend sends nothing to blue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import pglast
from pglast import ast
from pglast.visitors import Visitor
from sqlalchemy import Connection, text

from migrator.engine.steps import Doomed


@dataclass(frozen=True)
class Condition:
    """One condition's verdict. ``checked`` is False when it could not be checked here."""

    name: str
    ok: bool
    detail: str
    checked: bool = True


def not_before(due: datetime, now: datetime) -> Condition:
    """The release's `contract.not_before` has passed."""
    if due <= now:
        return Condition("not_before", True, f"due since {due:%Y-%m-%d %H:%M:%S %Z}")
    left = int((due - now).total_seconds())
    hours, rest = divmod(left, 3600)
    wait = f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
    return Condition(
        "not_before", False, f"not before {due:%Y-%m-%d %H:%M:%S %Z} ({wait} from now)"
    )


def old_version_gone(conn: Connection, application_name: str | None) -> Condition:
    """No connection of the old version is open (pg_stat_activity by application_name)."""
    if not application_name:
        return Condition(
            "old-version-connections",
            True,
            "not checked: the plan sets no versions.old.application_name",
            checked=False,
        )
    rows = conn.execute(
        text(
            "SELECT count(*), min(client_addr::text), min(backend_start) FROM pg_stat_activity "
            "WHERE application_name = :n AND datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ),
        {"n": application_name},
    ).one()
    count = int(rows[0])
    if count == 0:
        return Condition("old-version-connections", True, f"no connection from {application_name}")
    client = f" (e.g. from {rows[1]})" if rows[1] else ""
    return Condition(
        "old-version-connections",
        False,
        f"{count} connection(s) of {application_name!r} still open{client}: "
        "the old version is still running",
    )


def statements_available(conn: Connection) -> bool:
    """True when pg_stat_statements is installed in this database and readable."""
    if (
        conn.execute(
            text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
        ).first()
        is None
    ):
        return False
    try:
        with conn.begin_nested():
            conn.execute(text("SELECT 1 FROM pg_stat_statements LIMIT 1"))
    except Exception:  # not preloaded: the view raises until shared_preload_libraries has it
        return False
    return True


def snapshot_statements(conn: Connection, release: str) -> int:
    """Remember each statement's call count at completion; returns how many."""
    if not statements_available(conn):
        return 0
    conn.execute(text("DELETE FROM migrator.query_baseline WHERE release = :r"), {"r": release})
    result = conn.execute(
        text(
            "INSERT INTO migrator.query_baseline (release, queryid, calls) "
            "SELECT :r, queryid, sum(calls) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND queryid IS NOT NULL GROUP BY queryid"
        ),
        {"r": release},
    )
    return int(result.rowcount or 0)


class _References(Visitor):
    """Tables and column names a statement names."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: set[str] = set()
        self.columns: set[str] = set()

    def visit_RangeVar(self, ancestors: object, node: ast.RangeVar) -> None:
        if node.relname:
            self.tables.add(node.relname)

    def visit_ColumnRef(self, ancestors: object, node: ast.ColumnRef) -> None:
        names = [f.sval for f in node.fields or () if isinstance(f, ast.String) and f.sval]
        if names:
            self.columns.add(names[-1])

    def visit_ResTarget(self, ancestors: object, node: ast.ResTarget) -> None:
        if node.name:  # INSERT (col, ...) and UPDATE SET col = ...
            self.columns.add(node.name)


def touches(query: str, doomed: Iterable[Doomed]) -> list[Doomed]:
    """Which doomed objects a (normalised) statement reads or writes."""
    refs = _References()
    try:
        for raw in pglast.parse_sql(query):
            refs(raw)
    except pglast.parser.ParseError:
        return []
    hits = []
    for item in doomed:
        if item.table not in refs.tables:
            continue
        if item.column is None or item.column in refs.columns:
            hits.append(item)
    return hits


def no_reads_of_doomed(conn: Connection, release: str, doomed: Sequence[Doomed]) -> Condition:
    """No statement since completion read or wrote what the contract drops."""
    name = "doomed-objects-unused"
    if not doomed:
        return Condition(name, True, "the contract drops nothing the old version used")
    if not statements_available(conn):
        return Condition(
            name,
            True,
            "not checked: pg_stat_statements is not installed in this database",
            checked=False,
        )
    if not conn.execute(
        text(
            "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') "
            "FROM pg_roles WHERE rolname = current_user"
        )
    ).scalar():
        # Other roles' statements read as '<insufficient privilege>': the application's
        # reads of the doomed objects would go unseen, so say it is not checked.
        return Condition(
            name,
            True,
            "not checked: this role sees only its own statements in pg_stat_statements "
            "(GRANT pg_read_all_stats TO it: docs/privileges.md)",
            checked=False,
        )
    rows = conn.execute(
        text(
            "SELECT s.query, sum(s.calls) - coalesce(max(b.calls), 0) AS recent "
            "FROM pg_stat_statements s LEFT JOIN migrator.query_baseline b "
            "ON b.release = :r AND b.queryid = s.queryid "
            "WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "GROUP BY s.queryid, s.query "
            "HAVING sum(s.calls) > coalesce(max(b.calls), 0)"
        ),
        {"r": release},
    ).all()
    for query, recent in rows:
        if "migrator." in query:
            continue  # migrator's own bookkeeping
        hits = touches(query, doomed)
        if hits:
            shown = " ".join(query.split())[:120]
            return Condition(
                name,
                False,
                f"{int(recent)} call(s) since completion use {', '.join(map(str, hits))}: "
                f"{shown!r}",
            )
    listed = ", ".join(map(str, doomed))
    return Condition(name, True, f"no statement since completion uses {listed}")
