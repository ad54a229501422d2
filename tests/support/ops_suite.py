"""The table-driven operation suite's harness: one operation's whole release, held to
the same promises for every case.

For each case: after expand, the old version's and the new version's reads and writes
all succeed; after rollback the catalog (pg_dump --schema-only) is the one from before;
expanded again, backfilled, completed and contracted, the final shape holds and the
data is intact; a rerun has nothing to do; every statement has the lock-safe form.
Test modules (tests/test_ops_*.py) hold their own CASES and call run_release_case.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pglast
import psycopg
from pglast import ast

from migrator import commands
from migrator.observer import Observer
from migrator.plan.loader import parse_plan
from tests.support.catalog_snapshot import diff, schema_dump
from tests.support.servers import Server


def q(url: str, query: str) -> list[tuple[object, ...]]:
    """Run SQL as an application would: its own connection, autocommit, a time limit."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '10s'")
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


class Recorder(Observer):
    """Keeps every statement with its step and mode."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, str, bool]] = []
        self.descriptions: dict[str, str] = {}
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
        self.statements.append((step, sql, autocommit))

    def step_started(self, step: str, description: str) -> None:
        self.descriptions[step] = description

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def opts(url: str, observer: Observer | None = None) -> commands.Options:
    return commands.Options(database_url=url, observer=observer or Observer())


def plan_text(expand: str = "[]", contract: str = "[]", lock_timeout: str = "2s") -> str:
    return (
        "release: r1\n"
        f"database: {{lock_timeout: {lock_timeout}, retries: 2}}\n"
        f"expand:\n{_indent(expand)}\n"
        f"contract:\n  not_before: 0s\n  operations:\n{_indent(contract, 4)}\n"
    )


def _indent(text: str, n: int = 2) -> str:
    text = text.strip("\n")
    if text == "[]":
        return " " * n + "[]" if n == 2 else " " * n + "[]"
    lines = text.splitlines()
    pad = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
    return "\n".join(" " * n + ln[pad:] for ln in lines)


class SetupDatabases:
    """For tests that only read a database (the lint against its catalog): one database
    per distinct setup SQL, made on first use and shared by the module's tests on that
    server, instead of a CREATE DATABASE and the setup again for each test."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.urls: dict[tuple[str, ...], str] = {}

    def __call__(self, *setup: str) -> str:
        """The database made by running each of ``setup`` in turn."""
        if setup not in self.urls:
            url = self.server.create_database("read")
            self.urls[setup] = url
            for sql in setup:
                q(url, sql)
        return self.urls[setup]

    def drop(self) -> None:
        for url in self.urls.values():
            self.server.drop_database(url)


def setup_databases(server: Server) -> Iterator[SetupDatabases]:
    """The body of a module-scoped fixture on ``server``: its SetupDatabases, dropped at
    the end."""
    dbs = SetupDatabases(server)
    try:
        yield dbs
    finally:
        dbs.drop()


def release_rows(url: str) -> list[tuple[object, ...]]:
    """Releases recorded (none when the state schema is not there)."""
    if not q(url, "SELECT 1 FROM pg_namespace WHERE nspname = 'migrator'"):
        return []
    return q(url, "SELECT name, phase FROM migrator.releases")


BASE = """
CREATE TABLE users (id bigserial PRIMARY KEY, name text, email text, legacy text);
INSERT INTO users (name, email, legacy)
SELECT 'user' || g, 'u' || g || '@example.com', 'l' || g FROM generate_series(1, 50) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint, amount numeric NOT NULL DEFAULT 0);
INSERT INTO orders (user_id, amount) SELECT 1 + g % 50, g FROM generate_series(1, 100) g;
"""


@dataclass
class Case:
    """One operation's release: what it runs on, the plan, who reads and writes, the end."""

    id: str
    expand: str = "[]"
    contract: str = "[]"
    setup: str = BASE
    old: list[str] = field(default_factory=list)  # the old version, after expand
    new: list[str] = field(default_factory=list)  # the new version, after expand
    final: list[tuple[str, list[tuple[object, ...]]]] = field(default_factory=list)
    # PostgreSQL cannot undo everything: a line the rollback may leave in the dump.
    rollback_leaves: str | None = None
    # Where the seeded tables live after the contract (a rename moves them).
    users_after: str = "users"
    orders_after: str = "orders"


def check_forms(rec: Recorder) -> None:
    """The lock-safe forms of docs/lint-rules.md, on every statement a phase ran."""
    steps: dict[str, list[tuple[str, bool]]] = {}
    step_text = {k: d.upper() for k, d in rec.descriptions.items()}
    for step_key, sql, autocommit in rec.statements:
        steps.setdefault(step_key, []).append((sql.upper(), autocommit))
    for step_key, statements in steps.items():
        if "SQL" in step_key or step_key.startswith(("0.sql", "c0.sql")):
            continue  # raw SQL is the author's; only its CONCURRENTLY handling is ours
        texts = [s for s, _ in statements]
        for sql, autocommit in statements:
            # A referential action is no CASCADE drop.
            actions = sql.replace("ON DELETE CASCADE", "").replace("ON UPDATE CASCADE", "")
            assert "CASCADE" not in actions, sql
            if " INDEX " in sql and sql.startswith(("CREATE", "DROP")):
                if " ON ONLY " in sql:
                    pass  # the empty index of a partitioned parent: catalog only
                elif sql.startswith("DROP") and "PARTITIONED INDEX" in step_text.get(step_key, ""):
                    pass  # PostgreSQL has no DROP INDEX CONCURRENTLY for a partitioned one
                else:
                    assert "CONCURRENTLY" in sql and autocommit, sql  # rules 1, 2, 3
            # A partitioned table's constraint added after each partition's own: it
            # attaches theirs, no scan and no build (ops/partitioned.py).
            attaches = "ATTACHES ITS PARTITIONS'" in step_text.get(step_key, "")
            if "ADD CONSTRAINT" in sql and ("FOREIGN KEY" in sql or " CHECK " in sql):
                assert sql.endswith("NOT VALID") or attaches, sql  # rules 5, 6
            if "ADD CONSTRAINT" in sql and "UNIQUE" in sql:
                assert "USING INDEX" in sql or attaches, sql  # rule 8
            if "SET NOT NULL" in sql:
                assert any("DROP CONSTRAINT" in t for t in texts), sql  # rule 14
        if any("VALIDATE CONSTRAINT" in t for t in texts):
            assert not any("ADD CONSTRAINT" in t for t in texts), step_key  # rule 7
        altered = {
            raw.stmt.relation.relname
            for sql, _ in statements
            for raw in pglast.parse_sql(sql)
            if isinstance(raw.stmt, ast.AlterTableStmt) and raw.stmt.relation is not None
        }
        assert len(altered) <= 1, f"{step_key} alters {altered} in one transaction"  # rule 32


def run_release_case(case: Case, db: str) -> list[str]:
    """The whole release of one case; see the module docstring for what it holds.

    Returns the keys of the steps the first expand ran, in order."""
    q(db, case.setup)
    before = schema_dump(db)
    plan = parse_plan(plan_text(case.expand, case.contract))

    dry = Recorder()
    commands.expand(plan, commands.Options(database_url=db, observer=dry, dry_run=True))
    assert schema_dump(db) == before  # a dry run validates and prints, nothing more

    rec = Recorder()
    commands.expand(plan, opts(db, rec))
    expand_sql = [sql for _, sql, _ in rec.statements]
    expand_keys = list(rec.descriptions)
    assert [sql for _, sql, _ in dry.statements] == expand_sql  # it printed what then ran
    expanded = schema_dump(db)
    assert commands.expand(plan, opts(db)).ran == []  # a rerun has nothing left to do
    assert schema_dump(db) == expanded
    for sql in case.old + case.new:
        q(db, sql)  # raises if the expanded schema breaks either version

    commands.rollback(plan, opts(db, rec))
    after_rollback = schema_dump(db)
    if case.rollback_leaves:
        assert any("PostgreSQL cannot drop an enum value" in w for w in rec.warnings)
        # PostgreSQL cannot drop an enum value: the rollback keeps the added values,
        # and nothing else may differ.
        assert "'ok'" in after_rollback and "'ecstatic'" in after_rollback
        after_rollback = after_rollback.replace("    'ok',\n", "").replace(
            ",\n    'ecstatic'\n", "\n"
        )
    assert after_rollback == before, diff(before, after_rollback)
    assert migrator_functions(db) == []  # sync trigger functions live there; gone too
    for sql in case.old:
        q(db, sql)  # the old version still works after the rollback

    commands.expand(plan, opts(db, rec))
    commands.backfill(plan, opts(db, rec))
    data = checksums(db, "users", "orders")
    commands.complete(plan, opts(db, rec))
    commands.contract(opts(db, rec))
    # The contract changes shape, never the data of the columns it keeps.
    assert checksums(db, case.users_after, case.orders_after) == data
    statuses = {s for (s,) in q(db, "SELECT status FROM migrator.contracts")}
    assert statuses <= {"done"}
    # The contract ends the release, also when it has nothing to do.
    assert release_rows(db) == [("r1", "contracted")]  # with nothing to do, too
    for query, expected in case.final:
        assert q(db, query) == expected, query
    check_forms(rec)
    assert migrator_functions(db) == []
    return expand_keys


def migrator_functions(url: str) -> list[tuple[object, ...]]:
    """Functions a release left in migrator's schema (pg_dump above leaves that schema out).

    `release_phase` is the state schema's own function, there for every release."""
    return q(
        url,
        "SELECT proname FROM pg_proc WHERE pronamespace::regnamespace::text = 'migrator'"
        " AND proname <> 'release_phase'",
    )


def checksums(url: str, users: str, orders: str) -> list[tuple[object, ...]]:
    """md5 over every row of the seeded tables (the columns every case keeps)."""
    return q(
        url,
        "SELECT count(*), md5(string_agg(concat_ws('|', id, name, email), ',' ORDER BY id)) "
        f"FROM {users} UNION ALL "
        "SELECT count(*), md5(string_agg(concat_ws('|', id, user_id, amount), ',' ORDER BY id)) "
        f"FROM {orders}",
    )
