"""Partitioned tables (issue 16, section 3), on PostgreSQL 18 and 15.

Each operation that applies to a table, on a partitioned one, through the table-driven
suite's whole release (tests/support/ops_suite.py); then what only partitions have: an
index build resumed between partitions, a partition created mid-release getting the
sync trigger and the indexes, attach and detach, and the bad bounds refused.
"""

from __future__ import annotations

import re

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from migrator import commands
from migrator.db.connection import connect, make_engine
from migrator.engine.catalog import Catalog
from migrator.errors import ExitCode, LockNotAcquired, ValidationFailed
from migrator.lint.sources import lint_plan, lint_sql
from migrator.plan.loader import parse_plan
from tests.support.catalog_snapshot import schema_dump
from tests.support.ops_suite import BASE, Case, Recorder, opts, plan_text, q, run_release_case
from tests.support.servers import Server

# The suite's seeded users and orders, plus events partitioned by range of day, one
# partition of them itself partitioned by list of kind.
EVENTS = """
CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, kind text NOT NULL,
                     payload text) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01') PARTITION BY LIST (kind);
CREATE TABLE events_2025_a PARTITION OF events_2025 FOR VALUES IN ('a');
CREATE TABLE events_2025_b PARTITION OF events_2025 FOR VALUES IN ('b');
INSERT INTO events SELECT g, DATE '2024-06-01' + g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END,
                          'p' || g
FROM generate_series(1, 300) g;
"""


def _indexes(table: str) -> str:
    """Every index under a table's partition tree, with its validity and its parent."""
    return (
        "SELECT c.relname, i.indisvalid, p.relname FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "LEFT JOIN pg_inherits h ON h.inhrelid = c.oid "
        "LEFT JOIN pg_class p ON p.oid = h.inhparent "
        f"WHERE i.indrelid IN (SELECT relid FROM pg_partition_tree('{table}')) "
        "AND NOT i.indisprimary ORDER BY 1"
    )


CASES = [
    Case(
        "create_index on a partitioned table, unique too",
        setup=BASE + EVENTS,
        expand="""
        - create_index: {table: events, name: events_payload_idx, columns: [payload]}
        - create_index: {table: events, name: events_id_at_key, columns: [id, at, kind], unique: true}
        """,
        old=[
            "INSERT INTO events SELECT max(id) + 1, '2024-03-03', 'a', 'old' FROM events",
            "SELECT count(*) FROM events WHERE payload = 'p5'",
        ],
        new=["SELECT id FROM events WHERE payload = 'p7'"],
        final=[
            (
                _indexes("events"),
                [
                    ("events_2024_events_id_at_key", True, "events_id_at_key"),
                    ("events_2024_events_payload_idx", True, "events_payload_idx"),
                    ("events_2025_a_events_id_at_key", True, "events_2025_events_id_at_key"),
                    ("events_2025_a_events_payload_idx", True, "events_2025_events_payload_idx"),
                    ("events_2025_b_events_id_at_key", True, "events_2025_events_id_at_key"),
                    ("events_2025_b_events_payload_idx", True, "events_2025_events_payload_idx"),
                    ("events_2025_events_id_at_key", True, "events_id_at_key"),
                    ("events_2025_events_payload_idx", True, "events_payload_idx"),
                    ("events_id_at_key", True, None),
                    ("events_payload_idx", True, None),
                ],
            ),
            ("SELECT obj_description('events_payload_idx'::regclass, 'pg_class')", [(None,)]),
        ],
    ),
]


CASES += [
    Case(
        "drop_index of a partitioned index",
        setup=BASE + EVENTS + "CREATE INDEX events_kind_idx ON events (kind);",
        contract="""
        - drop_index: {name: events_kind_idx}
        """,
        old=["SELECT count(*) FROM events WHERE kind = 'a'"],
        final=[(_indexes("events"), [])],
    ),
    Case(
        # The Done-means item: several partitions, one of them sub-partitioned, none
        # with a key (each leaf is walked by its own pages), get a backfilled column
        # with its index, NOT NULL in the end, and no statement fails.
        "add_column with up, indexed, on a partitioned table",
        setup=BASE + EVENTS,
        expand="""
        - add_column:
            table: events
            column: {name: label, type: text}
            up: "kind || '-' || id"
            final: {nullable: false}
        - create_index: {table: events, name: events_label_idx, columns: [label]}
        """,
        old=[
            "INSERT INTO events (id, at, kind, payload) VALUES (5000, '2025-02-02', 'b', 'old')",
            "UPDATE events SET payload = 'old2' WHERE id = 7",
        ],
        new=["INSERT INTO events VALUES (5001, '2024-02-02', 'a', 'new', 'mine')"],
        final=[
            ("SELECT count(*) FROM events WHERE label IS NULL", [(0,)]),
            (
                "SELECT DISTINCT id, label FROM events WHERE id IN (7, 5000) ORDER BY id",
                [(7, "b-7"), (5000, "b-5000")],
            ),
            (
                "SELECT attrelid::regclass::text, attnotnull FROM pg_attribute "
                "WHERE attname = 'label' AND attrelid IN "
                "(SELECT relid FROM pg_partition_tree('events')) ORDER BY 1",
                [
                    ("events", True),
                    ("events_2024", True),
                    ("events_2025", True),
                    ("events_2025_a", True),
                    ("events_2025_b", True),
                ],
            ),
            (
                "SELECT count(*) FILTER (WHERE i.indisvalid) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE '%label_idx'",
                [(5,)],
            ),
        ],
    ),
]

UNIQUE_CONSTRAINTS = (
    "SELECT conrelid::regclass::text, conname, conindid::regclass::text, conparentid <> 0 "
    "FROM pg_constraint WHERE contype = 'u' AND conrelid IN "
    "(SELECT relid FROM pg_partition_tree('events')) ORDER BY 1"
)

CASES += [
    Case(
        "add_unique on a partitioned table",
        setup=BASE + EVENTS,
        expand="""
        - add_unique: {table: events, name: events_key, columns: [id, at, kind]}
        """,
        old=["INSERT INTO events SELECT max(id) + 1, '2025-03-03', 'a' FROM events"],
        new=[
            "INSERT INTO events (id, at, kind) VALUES (6001, '2024-03-03', 'b') ON CONFLICT "
            "ON CONSTRAINT events_key DO NOTHING"
        ],
        final=[
            (
                UNIQUE_CONSTRAINTS,
                [
                    ("events", "events_key", "events_key", False),
                    ("events_2024", "events_2024_events_key", "events_2024_events_key", True),
                    ("events_2025", "events_2025_events_key", "events_2025_events_key", True),
                    ("events_2025_a", "events_2025_a_events_key", "events_2025_a_events_key", True),
                    ("events_2025_b", "events_2025_b_events_key", "events_2025_b_events_key", True),
                ],
            ),
            (
                "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname LIKE '%events_key' AND NOT i.indisvalid",
                [(0,)],
            ),
        ],
    ),
]

# add_column's constraints on a partitioned table, through the routes add_check,
# add_foreign_key and add_unique take: the CHECK NOT VALID and validated through every
# partition; the key NOT VALID on 18 (validated in the contract), leaf by leaf on 15
# (ops/partitioned.py); a UNIQUE with the partition key is add_unique's (a UNIQUE of the
# new column alone is refused: it lacks the partition key).
ADD_COLUMN_CONSTRAINTS = Case(
    "add_column with check, references, up and NOT NULL, then add_unique, on a partitioned table",
    setup=BASE + EVENTS,
    expand="""
    - add_column:
        table: events
        column:
          name: user_id
          type: bigint
          check: "user_id > 0"
          references: {table: users, column: id, on_delete: cascade}
        up: "1 + id % 50"
        final: {nullable: false}
    - add_unique: {table: events, name: events_user_key, columns: [user_id, at, kind]}
    """,
    old=[
        "INSERT INTO events (id, at, kind) SELECT max(id) + 1, '2024-04-04', 'a' FROM events",
        "UPDATE events SET payload = 'old' WHERE id = 9",
    ],
    new=["INSERT INTO events (id, at, kind, user_id) VALUES (8001, '2024-04-05', 'a', 3)"],
    final=[
        (
            "SELECT conrelid::regclass::text, contype, conname, convalidated FROM pg_constraint "
            "WHERE conrelid IN (SELECT relid FROM pg_partition_tree('events')) "
            "AND contype IN ('c', 'f', 'u') ORDER BY 1, 2, 3",
            [
                (t, c, n, True)
                for t in ("events", "events_2024", "events_2025", "events_2025_a", "events_2025_b")
                for c, n in (
                    ("c", "events_user_id_check"),
                    ("f", "events_user_id_fkey"),
                    ("u", "events_user_key" if t == "events" else f"{t}_events_user_key"),
                )
            ],
        ),
        ("SELECT user_id FROM events WHERE id IN (9, 301) ORDER BY id", [(10,), (2,)]),
        (
            "SELECT count(*) FROM pg_attribute WHERE attname = 'user_id' AND attnotnull "
            "AND attrelid IN (SELECT relid FROM pg_partition_tree('events'))",
            [(5,)],
        ),
    ],
)
CASES.append(ADD_COLUMN_CONSTRAINTS)

# A table to attach, its rows inside the bound of 2026, and an index matching the
# partitioned one so the attach builds nothing.
TO_ATTACH = """
CREATE INDEX events_payload_idx ON events (payload);
CREATE TABLE events_2026 (LIKE events INCLUDING DEFAULTS);
INSERT INTO events_2026 SELECT g, DATE '2026-01-01' + g, 'a', 'n' || g
FROM generate_series(1, 50) g;
CREATE INDEX events_2026_payload_idx ON events_2026 (payload);
"""

# The parent with a plain index, a partial expression one, a UNIQUE constraint and a
# primary key, and a table to attach that has none of them.
INDEXED_PARENT = """
CREATE INDEX events_payload_idx ON events (payload);
CREATE INDEX events_lower_idx ON events (lower(payload)) WHERE id > 0;
ALTER TABLE events ADD CONSTRAINT events_key UNIQUE (id, at, kind);
ALTER TABLE events ADD PRIMARY KEY (at, kind, id);
CREATE TABLE events_2026 (LIKE events INCLUDING DEFAULTS);
INSERT INTO events_2026 SELECT g, DATE '2026-01-01' + g, 'a', 'n' || g
FROM generate_series(1, 50) g;
"""

# The parent's payload and kind NOT NULL; the table to attach has them nullable (and no
# NULL in them), which ATTACH PARTITION refuses on 15 and 18.
NULLABLE_TO_ATTACH = """
ALTER TABLE events ALTER COLUMN payload SET NOT NULL;
CREATE TABLE events_2026 (id bigint NOT NULL, at date NOT NULL, kind text, payload text);
INSERT INTO events_2026 SELECT g, DATE '2026-01-01' + g, 'a', 'n' || g
FROM generate_series(1, 50) g;
"""

# The indexed parent (INDEXED_PARENT's indexes) and a table to attach that is itself
# partitioned by list of kind, with none of them and kind nullable.
SUB_PARTITIONED_TO_ATTACH = """
CREATE INDEX events_payload_idx ON events (payload);
CREATE INDEX events_lower_idx ON events (lower(payload)) WHERE id > 0;
ALTER TABLE events ADD CONSTRAINT events_key UNIQUE (id, at, kind);
ALTER TABLE events ADD PRIMARY KEY (at, kind, id);
CREATE TABLE events_2026 (id bigint NOT NULL, at date NOT NULL, kind text, payload text)
    PARTITION BY LIST (kind);
CREATE TABLE events_2026_a PARTITION OF events_2026 FOR VALUES IN ('a');
CREATE TABLE events_2026_b PARTITION OF events_2026 FOR VALUES IN ('b');
INSERT INTO events_2026 SELECT g, DATE '2026-01-01' + g, CASE WHEN g % 3 = 0 THEN 'a' ELSE 'b' END,
                               'n' || g
FROM generate_series(1, 60) g;
"""
SUB_TREE_INDEXES = (
    "SELECT c.relname, c.oid::int, i.indisvalid, p.relname FROM pg_index i "
    "JOIN pg_class c ON c.oid = i.indexrelid "
    "LEFT JOIN pg_inherits h ON h.inhrelid = c.oid "
    "LEFT JOIN pg_class p ON p.oid = h.inhparent "
    "WHERE i.indrelid IN (SELECT relid FROM pg_partition_tree('events_2026')) ORDER BY 1"
)
SUB_ATTACHED = [
    ("events_2026_a_events_key", True, "events_2026_events_key"),
    ("events_2026_a_events_lower_idx", True, "events_2026_events_lower_idx"),
    ("events_2026_a_events_payload_idx", True, "events_2026_events_payload_idx"),
    ("events_2026_a_events_pkey", True, "events_2026_events_pkey"),
    ("events_2026_b_events_key", True, "events_2026_events_key"),
    ("events_2026_b_events_lower_idx", True, "events_2026_events_lower_idx"),
    ("events_2026_b_events_payload_idx", True, "events_2026_events_payload_idx"),
    ("events_2026_b_events_pkey", True, "events_2026_events_pkey"),
    ("events_2026_events_key", True, "events_key"),
    ("events_2026_events_lower_idx", True, "events_lower_idx"),
    ("events_2026_events_payload_idx", True, "events_payload_idx"),
    ("events_2026_events_pkey", True, "events_pkey"),
]

PARTITION_INDEXES = (
    "SELECT c.relname, c.oid::int, i.indisvalid, p.relname, "
    "obj_description(c.oid, 'pg_class') FROM pg_index i "
    "JOIN pg_class c ON c.oid = i.indexrelid "
    "LEFT JOIN pg_inherits h ON h.inhrelid = c.oid "
    "LEFT JOIN pg_class p ON p.oid = h.inhparent "
    "WHERE i.indrelid = 'events_2026'::regclass ORDER BY 1"
)
ATTACHED_COPIES = [
    ("events_2026_events_key", True, "events_key", None),
    ("events_2026_events_lower_idx", True, "events_lower_idx", None),
    ("events_2026_events_payload_idx", True, "events_payload_idx", None),
    ("events_2026_events_pkey", True, "events_pkey", None),
]

CASES += [
    Case(
        "attach_partition",
        setup=BASE + EVENTS + TO_ATTACH,
        expand="""
        - attach_partition:
            table: events
            partition: events_2026
            bound: "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
        """,
        old=[
            "SELECT count(*) FROM events",
            "INSERT INTO events_2026 (id, at, kind) VALUES (77, '2026-05-05', 'b')",
        ],
        new=["SELECT count(*) FROM events WHERE at >= '2026-01-01'"],
        final=[
            (
                "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'events_2026'",
                [("FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",)],
            ),
            (
                "SELECT count(*) FROM pg_constraint WHERE conrelid = 'events_2026'::regclass "
                "AND contype <> 'n'",
                [(0,)],
            ),
            ("SELECT count(*) FROM events WHERE at >= '2026-01-01'", [(52,)]),
        ],
    ),
    Case(
        "attach_partition builds the parent's indexes first",
        setup=BASE + EVENTS + INDEXED_PARENT,
        expand="""
        - attach_partition:
            table: events
            partition: events_2026
            bound: "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
        """,
        old=[
            "INSERT INTO events_2026 SELECT max(id) + 1, '2026-05-05', 'b' FROM events_2026",
            "SELECT count(*) FROM events WHERE lower(payload) = 'n5' AND id > 0",
        ],
        new=["INSERT INTO events VALUES (1, '2026-02-02', 'b', 'x') ON CONFLICT DO NOTHING"],
        final=[
            (PARTITION_INDEXES.replace("c.oid::int, ", "", 1), ATTACHED_COPIES),
            (
                "SELECT conname, conparentid <> 0 FROM pg_constraint "
                "WHERE conrelid = 'events_2026'::regclass AND contype <> 'n' ORDER BY 1",
                [("events_2026_events_key", True), ("events_2026_events_pkey", True)],
            ),
        ],
    ),
    Case(
        "attach_partition sets the parent's NOT NULL first",
        setup=BASE + EVENTS + NULLABLE_TO_ATTACH,
        expand="""
        - attach_partition:
            table: events
            partition: events_2026
            bound: "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
        """,
        old=["INSERT INTO events_2026 VALUES (77, '2026-05-05', 'b', 'x')"],
        new=["SELECT count(*) FROM events WHERE payload = 'n3'"],
        final=[
            (
                "SELECT attname, attnotnull FROM pg_attribute WHERE attnum > 0 "
                "AND attrelid = 'events_2026'::regclass ORDER BY attnum",
                [("id", True), ("at", True), ("kind", True), ("payload", True)],
            ),
            (
                "SELECT count(*) FROM pg_constraint WHERE conrelid = 'events_2026'::regclass "
                "AND contype <> 'n'",
                [(0,)],
            ),
        ],
    ),
    Case(
        "attach_partition of a sub-partitioned table",
        setup=BASE + EVENTS + SUB_PARTITIONED_TO_ATTACH,
        expand="""
        - attach_partition:
            table: events
            partition: events_2026
            bound: "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
        """,
        old=["INSERT INTO events_2026 SELECT max(id) + 1, '2026-05-05', 'a', 'x' FROM events_2026"],
        new=[
            "INSERT INTO events VALUES (7002, '2026-02-02', 'b', 'y') ON CONFLICT DO NOTHING",
            "SELECT count(*) FROM events WHERE lower(payload) = 'n5' AND id > 0",
        ],
        final=[
            (SUB_TREE_INDEXES.replace("c.oid::int, ", "", 1), SUB_ATTACHED),
            (
                "SELECT conrelid::regclass::text, conname, conparentid <> 0 FROM pg_constraint "
                "WHERE conrelid IN (SELECT relid FROM pg_partition_tree('events_2026')) "
                "AND contype <> 'n' ORDER BY 1, 2",
                [
                    ("events_2026", "events_2026_events_key", True),
                    ("events_2026", "events_2026_events_pkey", True),
                    ("events_2026_a", "events_2026_a_events_key", True),
                    ("events_2026_a", "events_2026_a_events_pkey", True),
                    ("events_2026_b", "events_2026_b_events_key", True),
                    ("events_2026_b", "events_2026_b_events_pkey", True),
                ],
            ),
            ("SELECT count(*) FROM events WHERE at >= '2026-01-01'", [(63,)]),
        ],
    ),
    Case(
        "detach_partition",
        setup=BASE + EVENTS,
        expand="""
        - detach_partition: {table: events, partition: events_2024}
        """,
        old=["SELECT count(*) FROM events_2024"],
        new=["SELECT count(*) FROM events"],
        final=[
            ("SELECT relispartition FROM pg_class WHERE relname = 'events_2024'", [(False,)]),
            (
                "SELECT count(*) FROM pg_constraint WHERE conrelid = 'events_2024'::regclass "
                "AND contype <> 'n'",
                [(0,)],
            ),
        ],
    ),
]


def failed_statements(server: Server, since: int) -> list[str]:
    """Statements that failed on ``server`` since byte ``since`` of its log, each with its
    error: PostgreSQL logs a failed statement after its ERROR (log_min_error_statement
    is error); an autovacuum a lock request cancels logs an ERROR with no statement, and
    is no statement of anyone's. Tests of one process run one at a time, so these are
    the test's own. Empty where the log cannot be read (a server of
    MIGRATOR_TEST_DATABASE_URL's)."""
    if server.log is None:
        return []
    with server.log.open("rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    errors: dict[str, str] = {}
    failed = []
    for pid, kind, message in re.findall(r"\[(\d+)\] (ERROR|STATEMENT):  (.*)", text):
        if kind == "ERROR":
            errors[pid] = message
        elif pid in errors:
            failed.append(f"{errors.pop(pid)}: {message}")
    return failed


def log_size(server: Server) -> int:
    """Where the server's log ends now (0 where it cannot be read)."""
    return server.log.stat().st_size if server.log is not None else 0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_operation_release(case: Case, server: Server, db: str) -> None:
    """The suite's whole release; and no statement of it failed, not even one retried
    after a lock timeout (the Done-means of issue 16's partitions: a partitioned table
    of several partitions gets a new indexed, backfilled column with no failed
    statement)."""
    since = log_size(server)
    run_release_case(case, db)
    assert failed_statements(server, since) == []


# Findings the lint rightly reports on a case's own statements: the rollback of a
# partitioned index (and its drop) is a DROP INDEX without CONCURRENTLY, the only form
# PostgreSQL has for one.
EXPECTED_LINT: dict[str, set[str]] = {
    "create_index on a partitioned table, unique too": {"M002"},
    "drop_index of a partitioned index": {"M002"},
    "add_column with up, indexed, on a partitioned table": {"M002"},
}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_statements_pass_the_lint_rules(case: Case, db: str) -> None:
    """Every statement, held to docs/lint-rules.md by migrator's linter on the live catalog."""
    q(db, case.setup)
    plan = parse_plan(plan_text(case.expand, case.contract))
    engine = make_engine(db)
    try:
        with connect(engine) as conn:
            findings = lint_plan(plan, catalog=Catalog(conn))
    finally:
        engine.dispose()
    assert {f.rule for f in findings} == EXPECTED_LINT.get(case.id, set()), findings
    # ... and only as the warning that says why: no error stands in the way.
    assert all(f.severity == "warning" for f in findings), findings


def test_partitioned_index_build_resumes_after_the_partition_it_stopped_at(db: str) -> None:
    """A build interrupted between partitions (a partition held under a lock past the
    plan's lock_timeout and retries) resumes where it stopped: the partitions already
    indexed are not built again, and the parent's index ends valid."""
    q(db, BASE + EVENTS)
    plan = parse_plan(
        plan_text(
            "- create_index: {table: events, name: events_payload_idx, columns: [payload]}",
            lock_timeout="100ms",
        ).replace("retries: 2", "retries: 0")
    )
    with psycopg.connect(db) as holder:
        holder.execute("LOCK TABLE events_2025_b IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(LockNotAcquired, match="events_2025_b"):
            commands.expand(plan, opts(db))
        holder.rollback()
    assert q(db, _indexes("events")) == [
        ("events_2024_events_payload_idx", True, "events_payload_idx"),
        ("events_2025_a_events_payload_idx", True, "events_2025_events_payload_idx"),
        ("events_2025_events_payload_idx", False, "events_payload_idx"),
        ("events_payload_idx", False, None),
    ]
    rec = Recorder()
    result = commands.expand(plan, opts(db, rec))
    assert [k for k in result.ran if "create_index" in k] == [
        "0.create_index.create-index-events_2025_b",
        "0.create_index.create-index-done",
    ]
    assert [s for _, s, _ in rec.statements if "CREATE INDEX" in s] == [
        "CREATE INDEX CONCURRENTLY events_2025_b_events_payload_idx ON public.events_2025_b "
        "USING btree (payload)"
    ]
    assert q(db, _indexes("events"))[-1] == ("events_payload_idx", True, None)
    assert all(valid for _, valid, _ in q(db, _indexes("events")))


def test_partition_created_mid_release_gets_trigger_and_indexes(db: str) -> None:
    """A partition created after the expand gets the sync trigger (it is on the parent:
    PostgreSQL 13+ clones row triggers to new partitions) and the partitioned index."""
    q(db, BASE + EVENTS)
    plan = parse_plan(
        plan_text("""
        - add_column:
            table: events
            column: {name: label, type: text}
            up: "kind || '-' || id"
        - create_index: {table: events, name: events_label_idx, columns: [label]}
        """)
    )
    commands.expand(plan, opts(db))
    q(
        db,
        "CREATE TABLE events_2026 PARTITION OF events "
        "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    )
    # The old version's insert, without the new column, into the new partition.
    q(db, "INSERT INTO events (id, at, kind) VALUES (9000, '2026-03-03', 'a')")
    assert q(db, "SELECT label FROM events_2026") == [("a-9000",)]
    assert ("events_2026_label_idx", True, "events_label_idx") in q(db, _indexes("events"))
    commands.backfill(plan, opts(db))
    commands.complete(plan, opts(db))
    commands.contract(opts(db))
    assert q(db, "SELECT count(*) FROM events WHERE label IS NULL") == [(0,)]


@pytest.mark.parametrize(
    ("expand", "message"),
    [
        (
            "- attach_partition: {table: events, partition: events_2026, "
            "bound: \"FOR VALUES FROM ('2024-06-01') TO ('2027-01-01')\"}",
            "plan.yaml:4:5: attach_partition events_2026: bound FOR VALUES FROM "
            "('2024-06-01') TO ('2027-01-01'): partition \"events_2026\" would overlap "
            'partition "events_2024"',
        ),
        (
            "- attach_partition: {table: events, partition: events_2026, "
            "bound: \"FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')\"}",
            "plan.yaml:4:5: attach_partition events_2026: events_2026 holds 20 rows outside "
            "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01'); move or delete them first",
        ),
        (
            "- add_unique: {table: events, name: events_u, columns: [id, at]}",
            "plan.yaml:4:5: add_unique events_u: a UNIQUE constraint on partitioned table "
            "events must hold every column of its partition key (kind is missing) "
            "(PostgreSQL checks uniqueness per partition)",
        ),
        (
            "- add_column: {table: events, column: {name: label, type: text, unique: true}}",
            "plan.yaml:4:5: add_column events.label: column.unique on partitioned table events "
            "must hold every column of its partition key (at, kind is missing) (PostgreSQL "
            "checks uniqueness per partition); add the column, then add_unique with columns "
            "[label, at, kind]",
        ),
        (
            "- add_column: {table: events, column: {name: label, type: text}, up: payload, "
            "final: {unique: {name: events_label_key}}}",
            "plan.yaml:4:5: add_column events.label: final.unique on partitioned table events "
            "must hold every column of its partition key (at, kind is missing) (PostgreSQL "
            "checks uniqueness per partition); add the column, then add_unique with columns "
            "[label, at, kind]",
        ),
        (
            "- add_column: {table: events, column: {name: user_id, type: bigint, default: 4242, "
            "references: {table: users, column: id}}}",
            "plan.yaml:4:5: add_column events.user_id: column.references: every row of events "
            "would hold the default 4242, which users.id does not hold; add that row first, "
            "or fill the column with `up` instead",
        ),
        (
            "- detach_partition: {table: events, partition: users}",
            "plan.yaml:4:5: detach_partition users: public.users is not a partition of events",
        ),
        (
            "- create_index: {table: events, name: events_id_key, columns: [id], unique: true}",
            "plan.yaml:4:5: create_index events_id_key: a unique index on partitioned table "
            "events must hold every column of its partition key (at, kind is missing) "
            "(PostgreSQL checks uniqueness per partition)",
        ),
    ],
)
def test_bad_partition_input_is_refused_in_one_line_exit_2(
    db: str, expand: str, message: str
) -> None:
    """An overlapping bound, rows outside the bound (counted), a table that is no
    partition, a unique index or constraint (add_column's too) without the partition
    key: one line at the plan's
    file:line:column, exit 2, nothing changed."""
    q(db, BASE + EVENTS + TO_ATTACH)
    before = schema_dump(db)
    plan = parse_plan(plan_text(expand), "plan.yaml")
    with pytest.raises(ValidationFailed) as info:
        commands.expand(plan, opts(db))
    assert str(info.value) == message
    assert "\n" not in str(info.value)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(db) == before


FOREIGN_KEY = Case(
    "add_foreign_key on a partitioned table",
    setup=BASE + EVENTS + "ALTER TABLE events ADD COLUMN user_id bigint;"
    "UPDATE events SET user_id = 1 + id % 50;",
    expand="""
    - add_foreign_key:
        table: events
        name: events_user_fkey
        columns: [user_id]
        references: {table: users, columns: [id]}
    """,
    old=["INSERT INTO events (id, at, kind) VALUES (8000, '2024-04-04', 'a')"],
    new=["INSERT INTO events (id, at, kind, user_id) VALUES (8001, '2024-04-04', 'a', 3)"],
    final=[
        (
            "SELECT conrelid::regclass::text, convalidated FROM pg_constraint "
            "WHERE conname = 'events_user_fkey' ORDER BY 1",
            [
                ("events", True),
                ("events_2024", True),
                ("events_2025", True),
                ("events_2025_a", True),
                ("events_2025_b", True),
            ],
        )
    ],
)


def test_unique_on_a_partitioned_table_adopts_the_partitions_indexes(db: str) -> None:
    """The constraint added to the table last builds nothing: each index under it, as
    it stands just before that statement (the leaves' built concurrently, their own
    constraints), is the very one (same oid) attached after it, on 15 and 18."""
    q(db, BASE + EVENTS)
    plan = parse_plan(
        plan_text("- add_unique: {table: events, name: events_key, columns: [id, at, kind]}")
    )
    tree = (
        "SELECT c.relname, c.oid::int FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid IN (SELECT relid FROM pg_partition_tree('events')) ORDER BY 1"
    )
    seen: list[list[tuple[object, ...]]] = []

    class Before(Recorder):
        def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
            super().statement(sql, step=step, autocommit=autocommit, dry_run=dry_run)
            if sql.startswith("ALTER TABLE public.events ADD CONSTRAINT"):
                seen.append(q(db, tree))

    rec = Before()
    result = commands.expand(plan, opts(db, rec))
    assert result.ran[-1] == "0.add_unique.unique"
    assert [s for _, s, _ in rec.statements if "CREATE" in s] == [
        f"CREATE UNIQUE INDEX CONCURRENTLY {leaf}_events_key ON public.{leaf} "
        "USING btree (id, at, kind)"
        for leaf in ("events_2025_a", "events_2025_b", "events_2024")
    ]
    after = q(db, tree)
    assert [n for n, _ in after] == [
        "events_2024_events_key",
        "events_2025_a_events_key",
        "events_2025_b_events_key",
        "events_2025_events_key",
        "events_key",
    ]
    assert seen == [[row for row in after if row[0] != "events_key"]]


def test_attach_builds_no_index_under_its_lock(db: str) -> None:
    """Every index of the parent is on the table before the ATTACH statement runs (built
    concurrently, each its own step, the unique one made its constraint), and the attach
    adopts exactly those: the same oids before and after it, none added, on 15 and 18."""
    q(db, BASE + EVENTS + INDEXED_PARENT)
    plan = parse_plan(
        plan_text(
            "- attach_partition: {table: events, partition: events_2026, "
            "bound: \"FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')\"}"
        )
    )
    seen: list[list[tuple[object, ...]]] = []

    class Before(Recorder):
        def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
            super().statement(sql, step=step, autocommit=autocommit, dry_run=dry_run)
            if " ATTACH PARTITION " in sql:
                seen.append([(n, oid, valid) for n, oid, valid, _, _ in q(db, PARTITION_INDEXES)])

    rec = Before()
    result = commands.expand(plan, opts(db, rec))
    assert result.ran[:6] == [
        "0.attach_partition.attach-index-events_key",
        "0.attach_partition.attach-index-events_key-constraint",
        "0.attach_partition.attach-index-events_lower_idx",
        "0.attach_partition.attach-index-events_payload_idx",
        "0.attach_partition.attach-index-events_pkey",
        "0.attach_partition.attach-index-events_pkey-constraint",
    ]
    assert [s for _, s, _ in rec.statements if s.startswith("CREATE")] == [
        "CREATE UNIQUE INDEX CONCURRENTLY events_2026_events_key ON public.events_2026 "
        "(id, at, kind)",
        "CREATE INDEX CONCURRENTLY events_2026_events_lower_idx ON public.events_2026 "
        "((lower(payload))) WHERE id > 0",
        "CREATE INDEX CONCURRENTLY events_2026_events_payload_idx ON public.events_2026 (payload)",
        "CREATE UNIQUE INDEX CONCURRENTLY events_2026_events_pkey ON public.events_2026 "
        "(at, kind, id)",
    ]
    after = q(db, PARTITION_INDEXES)
    assert seen == [[(n, oid, True) for n, oid, _, _, _ in after]]
    mark = "migrator: built by release r1"
    assert [(n, v, p, c) for n, _, v, p, c in after] == [
        (n, v, p, mark) for n, v, p, _ in ATTACHED_COPIES
    ]


ATTACH_2026 = (
    "- attach_partition: {table: events, partition: events_2026, "
    "bound: \"FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')\"}"
)


def _seq_scans(url: str, table: str) -> int:
    """pg_stat_user_tables.seq_scan of a table, once no other session of the database is
    left: a backend flushes its statistics before it leaves pg_stat_activity."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute(query).fetchone() != (0,):
            conn.execute("SELECT pg_sleep(0.05)")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relid = %s::regclass", (table,)
        ).fetchone()
        assert row is not None
        return int(row[0])


def test_attach_sets_not_null_without_a_scan_and_refuses_nulls(db: str) -> None:
    """A column the parent has NOT NULL and the table nullable: with NULLs in it, one
    line naming the column and the count, exit 2, nothing changed; without, the table
    is scanned only by the plan's checks (the NULL and outside-the-bound counts) and the
    two VALIDATEs: SET NOT NULL and ATTACH scan nothing (pg_stat_user_tables.seq_scan),
    on 15 and 18."""
    q(db, BASE + EVENTS + NULLABLE_TO_ATTACH + "UPDATE events_2026 SET payload = NULL WHERE id < 4")
    before = schema_dump(db)
    plan = parse_plan(plan_text(ATTACH_2026), "plan.yaml")
    with pytest.raises(ValidationFailed) as info:
        commands.expand(plan, opts(db))
    assert str(info.value) == (
        "plan.yaml:4:5: attach_partition events_2026: column payload of events_2026 holds "
        "3 NULLs, and events.payload is NOT NULL; fill or delete those rows first"
    )
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(db) == before

    q(db, "UPDATE events_2026 SET payload = 'fixed' WHERE payload IS NULL")
    scans = _seq_scans(db, "events_2026")
    rec = Recorder()
    commands.expand(plan, opts(db, rec))
    validates = [s for _, s, _ in rec.statements if "VALIDATE CONSTRAINT" in s]
    assert len(validates) == 3  # kind's and payload's IS NOT NULL, the bound's CHECK
    # validate_live's counts: NULLs of kind, of payload; rows outside the bound.
    assert _seq_scans(db, "events_2026") - scans == 3 + len(validates)
    sets = [s for _, s, _ in rec.statements if "SET NOT NULL" in s]
    assert sets == [
        f"ALTER TABLE public.events_2026 ALTER COLUMN {c} SET NOT NULL" for c in ("kind", "payload")
    ]
    assert q(db, "SELECT relispartition FROM pg_class WHERE relname = 'events_2026'") == [(True,)]


def test_attach_of_a_sub_partitioned_table_builds_and_scans_nothing_under_its_lock(
    db: str,
) -> None:
    """A table that is itself partitioned: each missing index goes ON ONLY the table and
    CONCURRENTLY on each leaf (attached), the unique and primary keys per leaf USING
    INDEX, then on the table (adopting theirs); when the ATTACH runs, every index of the
    tree is the one there after it (same oids) and every leaf holds the bound's CHECK,
    validated, so PostgreSQL skips its scan; on 15 and 18."""
    q(db, BASE + EVENTS + SUB_PARTITIONED_TO_ATTACH)
    plan = parse_plan(plan_text(ATTACH_2026))
    seen: list[object] = []
    bound_checks = (
        "SELECT conrelid::regclass::text, convalidated FROM pg_constraint "
        "WHERE conname = '_migrator_events_2026_bound' ORDER BY 1"
    )

    class Before(Recorder):
        def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
            super().statement(sql, step=step, autocommit=autocommit, dry_run=dry_run)
            if " ATTACH PARTITION " in sql and sql.startswith("ALTER TABLE"):
                seen.append([(n, oid, v) for n, oid, v, _ in q(db, SUB_TREE_INDEXES)])
                seen.append(q(db, bound_checks))

    rec = Before()
    commands.expand(plan, opts(db, rec))
    creates = [
        re.sub(r" (USING \w+ )?\(.*", "", s)
        for _, s, _ in rec.statements
        if s.startswith(("CREATE INDEX", "CREATE UNIQUE INDEX"))
    ]
    assert creates == [
        "CREATE UNIQUE INDEX CONCURRENTLY events_2026_a_events_key ON public.events_2026_a",
        "CREATE UNIQUE INDEX CONCURRENTLY events_2026_b_events_key ON public.events_2026_b",
        "CREATE INDEX IF NOT EXISTS events_2026_events_lower_idx ON ONLY public.events_2026",
        "CREATE INDEX CONCURRENTLY events_2026_a_events_lower_idx ON public.events_2026_a",
        "CREATE INDEX CONCURRENTLY events_2026_b_events_lower_idx ON public.events_2026_b",
        "CREATE INDEX IF NOT EXISTS events_2026_events_payload_idx ON ONLY public.events_2026",
        "CREATE INDEX CONCURRENTLY events_2026_a_events_payload_idx ON public.events_2026_a",
        "CREATE INDEX CONCURRENTLY events_2026_b_events_payload_idx ON public.events_2026_b",
        "CREATE UNIQUE INDEX CONCURRENTLY events_2026_a_events_pkey ON public.events_2026_a",
        "CREATE UNIQUE INDEX CONCURRENTLY events_2026_b_events_pkey ON public.events_2026_b",
    ]
    after = q(db, SUB_TREE_INDEXES)
    assert seen == [
        [(n, oid, True) for n, oid, _, _ in after],
        [("events_2026", True), ("events_2026_a", True), ("events_2026_b", True)],
    ]
    assert [(n, v, p) for n, _, v, p in after] == SUB_ATTACHED


# The parent's kind and payload NOT NULL; the sub-partitioned table to attach has them
# nullable, its leaf events_2026_a both NOT NULL of its own (kind for its primary key),
# its leaf archive.events_2026_b (another schema) neither.
MIXED_LEAVES_TO_ATTACH = """
ALTER TABLE events ALTER COLUMN payload SET NOT NULL;
CREATE SCHEMA archive;
CREATE TABLE events_2026 (id bigint NOT NULL, at date NOT NULL, kind text, payload text)
    PARTITION BY LIST (kind);
CREATE TABLE events_2026_a PARTITION OF events_2026 (PRIMARY KEY (kind, id), payload NOT NULL)
    FOR VALUES IN ('a');
CREATE TABLE archive.events_2026_b PARTITION OF events_2026 FOR VALUES IN ('b');
INSERT INTO events_2026 SELECT g, DATE '2026-01-01' + g, CASE WHEN g % 3 = 0 THEN 'a' ELSE 'b' END,
                               'n' || g
FROM generate_series(1, 30) g;
"""


def test_attach_rollback_makes_nullable_exactly_what_the_expand_made_not_null(db: str) -> None:
    """After the rollback every column of the sub-partitioned table is as nullable as
    before, on 15 and 18: the leaf in another schema found by its schema, the leaf's own
    NOT NULLs kept (on 15 the root's DROP NOT NULL reaches every partition, and failed on
    the one a primary key needs)."""
    q(db, EVENTS + MIXED_LEAVES_TO_ATTACH)
    before = schema_dump(db)
    not_null = (
        "SELECT attrelid::regclass::text, attname, attnotnull FROM pg_attribute "
        "WHERE attrelid IN (SELECT relid FROM pg_partition_tree('events_2026')) "
        "AND attname IN ('kind', 'payload') ORDER BY 1, 2"
    )
    plan = parse_plan(plan_text(ATTACH_2026))
    commands.expand(plan, opts(db))
    assert {n for _, _, n in q(db, not_null)} == {True}
    commands.rollback(plan, opts(db))
    assert q(db, not_null) == [
        ("archive.events_2026_b", "kind", False),
        ("archive.events_2026_b", "payload", False),
        ("events_2026", "kind", False),
        ("events_2026", "payload", False),
        ("events_2026_a", "kind", True),
        ("events_2026_a", "payload", True),
    ]
    assert schema_dump(db) == before
    assert q(db, "SELECT count(*) FROM events_2026") == [(30,)]


def test_attach_of_a_table_partitioned_off_the_parents_unique_key_is_refused(db: str) -> None:
    """A sub-partitioned table whose partition key the parent's unique key lacks cannot
    hold that key (PostgreSQL checks uniqueness per partition): one line, exit 2,
    nothing changed."""
    q(
        db,
        BASE + EVENTS + "ALTER TABLE events ADD CONSTRAINT events_key UNIQUE (id, at, kind);"
        "CREATE TABLE events_2026 (LIKE events) PARTITION BY LIST (payload);"
        "CREATE TABLE events_2026_x PARTITION OF events_2026 FOR VALUES IN ('x');",
    )
    before = schema_dump(db)
    with pytest.raises(ValidationFailed) as info:
        commands.expand(parse_plan(plan_text(ATTACH_2026), "plan.yaml"), opts(db))
    assert str(info.value) == (
        "plan.yaml:4:5: attach_partition events_2026: events_2026 is partitioned by "
        "payload, which events_key of events (id, at, kind) does not hold: PostgreSQL checks "
        "uniqueness per partition, so events_2026 cannot have that constraint, and the "
        "attach needs it"
    )
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(db) == before


# PostgreSQL 17+ takes an exclusion constraint on a partitioned table (15 refuses it:
# "exclusion constraints are not supported on partitioned tables"), so on 18 only: the
# parent's, over the partition key with =, and a table to attach that lacks it.
ROOMS = """
CREATE EXTENSION btree_gist;
CREATE TABLE rooms (room int NOT NULL, during tstzrange NOT NULL, note text)
    PARTITION BY LIST (room);
ALTER TABLE rooms ADD CONSTRAINT rooms_no_overlap
    EXCLUDE USING gist (room WITH =, during WITH &&) WHERE (note IS DISTINCT FROM 'x');
CREATE TABLE rooms_1 PARTITION OF rooms FOR VALUES IN (1);
CREATE TABLE rooms_2 (LIKE rooms);
INSERT INTO rooms_2 SELECT 2, tstzrange('2026-01-01'::timestamptz + g * interval '1 day',
                                        '2026-01-01'::timestamptz + (g + 1) * interval '1 day'),
                           'n' || g
FROM generate_series(1, 40) g;
"""
ROOMS_ATTACH = "- attach_partition: {table: rooms, partition: rooms_2, bound: 'FOR VALUES IN (2)'}"
EXCLUSION = Case(
    "attach_partition adds the parent's exclusion constraint first",
    setup=BASE + ROOMS,
    expand=ROOMS_ATTACH,
    old=["INSERT INTO rooms_2 VALUES (2, '[2030-01-01,2030-01-02)', 'x')"],
    new=[
        "INSERT INTO rooms VALUES (2, '[2031-01-01,2031-01-02)', 'y') ON CONFLICT DO NOTHING",
    ],
    final=[
        (
            "SELECT conname, pg_get_constraintdef(oid), conparentid <> 0 FROM pg_constraint "
            "WHERE conrelid = 'rooms_2'::regclass AND contype = 'x'",
            [
                (
                    "rooms_2_rooms_no_overlap",
                    "EXCLUDE USING gist (room WITH =, during WITH &&) "
                    "WHERE ((note IS DISTINCT FROM 'x'::text))",
                    True,
                )
            ],
        ),
        ("SELECT count(*) FROM pg_class WHERE relname LIKE '\\_migrator\\_%'", [(0,)]),
        ("SELECT obj_description('rooms_2_rooms_no_overlap'::regclass, 'pg_class')", [(None,)]),
    ],
)


def test_attach_adds_the_parents_exclusion_constraint_first(fresh_db: str) -> None:
    """The parent's exclusion constraint, which ATTACH would build on the table under its
    lock, is added first by add_exclusion's own steps (helper index built concurrently,
    the guard, ADD CONSTRAINT under lock_timeout, the helper dropped) with the same
    definition, so the ATTACH adopts it: the whole release, and the lint, on 18."""
    run_release_case(EXCLUSION, fresh_db)
    rec = Recorder()
    q(fresh_db, "DROP SCHEMA public CASCADE; CREATE SCHEMA public; DROP SCHEMA migrator CASCADE")
    q(fresh_db, EXCLUSION.setup)
    commands.expand(parse_plan(plan_text(EXCLUSION.expand)), opts(fresh_db, rec))
    assert [k for k in rec.descriptions if "exclusion" in k] == [
        f"0.attach_partition.attach-index-rooms_no_overlap-exclusion-{s}"
        for s in ("helper-index", "guard", "constraint", "drop-helper")
    ]
    engine = make_engine(fresh_db)
    q(fresh_db, "DROP SCHEMA public CASCADE; CREATE SCHEMA public; DROP SCHEMA migrator CASCADE")
    q(fresh_db, EXCLUSION.setup)
    try:
        with connect(engine) as conn:
            findings = lint_plan(parse_plan(plan_text(EXCLUSION.expand)), catalog=Catalog(conn))
    finally:
        engine.dispose()
    assert all(f.severity == "warning" for f in findings), findings


SUB_EXCLUSION = Case(
    "attach_partition adds the parent's exclusion constraint to a sub-partitioned table",
    setup=BASE
    + ROOMS
    + """
ALTER TABLE rooms_2 RENAME TO rooms_2_a;
CREATE TABLE rooms_2 (LIKE rooms) PARTITION BY LIST (room);
ALTER TABLE rooms_2 ATTACH PARTITION rooms_2_a FOR VALUES IN (2);
CREATE SCHEMA side;
CREATE TABLE side.rooms_2_z PARTITION OF rooms_2 DEFAULT;
""",
    expand=ROOMS_ATTACH,
    old=["INSERT INTO rooms_2 VALUES (2, '[2030-01-01,2030-01-02)', 'x')"],
    new=["INSERT INTO rooms VALUES (2, '[2031-01-01,2031-01-02)', 'y') ON CONFLICT DO NOTHING"],
    final=[
        (
            "SELECT conrelid::regclass::text, conname, conparentid <> 0 FROM pg_constraint "
            "WHERE conrelid IN (SELECT relid FROM pg_partition_tree('rooms_2')) "
            "AND contype = 'x' ORDER BY 1",
            [
                ("rooms_2", "rooms_2_rooms_no_overlap", True),
                ("rooms_2_a", "rooms_2_a_rooms_no_overlap", True),
                ("side.rooms_2_z", "rooms_2_z_rooms_no_overlap", True),
            ],
        ),
        ("SELECT count(*) FROM pg_class WHERE relname LIKE '\\_migrator\\_%'", [(0,)]),
    ],
)


def test_attach_adds_the_parents_exclusion_to_a_sub_partitioned_table(fresh_db: str) -> None:
    """A table to attach that is itself partitioned (by the key the constraint compares
    with =), one leaf in another schema: each leaf gets the constraint by add_exclusion's
    steps, then the table, adopting theirs (one constraint per leaf, no second build);
    the attach adopts that; both versions' writes work; the rollback leaves the catalog
    as it was. On 18 (before: refused)."""
    q(fresh_db, SUB_EXCLUSION.setup)
    before = schema_dump(fresh_db)
    plan = parse_plan(plan_text(SUB_EXCLUSION.expand))
    rec = Recorder()
    commands.expand(plan, opts(fresh_db, rec))
    assert [k.removeprefix("0.attach_partition.") for k in rec.descriptions if "overlap" in k] == [
        f"attach-{leaf}-index-rooms_no_overlap-exclusion-{s}"
        for leaf in ("rooms_2_a", "rooms_2_z")
        for s in ("helper-index", "guard", "constraint", "drop-helper")
    ] + ["attach-index-rooms_no_overlap-constraint"]
    for query, expected in SUB_EXCLUSION.final:
        assert q(fresh_db, query) == expected, query
    for sql in SUB_EXCLUSION.old + SUB_EXCLUSION.new:
        q(fresh_db, sql)
    commands.rollback(plan, opts(fresh_db))
    assert schema_dump(fresh_db) == before


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            "INSERT INTO rooms_2 VALUES (2, '[2026-01-03,2026-01-09)', 'n');",
            "plan.yaml:4:5: attach_partition rooms_2: the copy of rooms's exclusion constraint "
            "rooms_no_overlap on rooms_2 (rooms_2_rooms_no_overlap): ",
        ),
        (
            "DROP TABLE rooms_2; CREATE TABLE rooms_2 (LIKE rooms) PARTITION BY LIST (note);"
            "CREATE TABLE rooms_2_n PARTITION OF rooms_2 FOR VALUES IN ('n');",
            "plan.yaml:4:5: attach_partition rooms_2: the attach would build exclusion "
            "constraint rooms_no_overlap's index on rooms_2 under its lock, and rooms_2 is "
            "partitioned by note, which rooms_no_overlap does not compare with =: PostgreSQL "
            "takes an exclusion constraint on a partitioned table only over its partition key "
            "with =, so rooms_2 cannot have it, and the attach needs it",
        ),
    ],
)
def test_attach_refuses_an_exclusion_it_cannot_add_first(
    fresh_db: str, setup: str, message: str
) -> None:
    """Rows of the table that conflict under the parent's exclusion (counted, as
    add_exclusion counts them), and a sub-partitioned table whose partition key the
    constraint does not compare with = (PostgreSQL refuses it such a constraint): one
    line, exit 2, nothing changed, on 18."""
    q(fresh_db, BASE + ROOMS + setup)
    before = schema_dump(fresh_db)
    with pytest.raises(ValidationFailed) as info:
        commands.expand(parse_plan(plan_text(ROOMS_ATTACH), "plan.yaml"), opts(fresh_db))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(fresh_db) == before


def test_attach_index_builds_resume_after_an_interrupted_one(db: str) -> None:
    """The second index build fails part way (a writer's open transaction on the table
    outlasts the build's wait for it: lock_timeout, no retry), leaving its INVALID
    index; the rerun drops that, builds it and the rest, each once, and attaches: the
    first index (and its constraint) untouched, no invalid index left, on 15 and 18."""
    q(db, BASE + EVENTS + INDEXED_PARENT)
    plan = parse_plan(
        plan_text(ATTACH_2026, lock_timeout="100ms").replace("retries: 2", "retries: 0")
    )
    second = "CREATE INDEX CONCURRENTLY events_2026_events_lower_idx"
    with psycopg.connect(db) as writer:

        class Interrupt(Recorder):
            def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
                super().statement(sql, step=step, autocommit=autocommit, dry_run=dry_run)
                if sql.startswith(second):
                    writer.execute("INSERT INTO events_2026 VALUES (999, '2026-09-09', 'a', 'w')")

        with pytest.raises(LockNotAcquired, match="attach-index-events_lower_idx"):
            commands.expand(plan, opts(db, Interrupt()))
        writer.rollback()
    left = q(db, PARTITION_INDEXES)
    assert [(n, v) for n, _, v, _, _ in left] == [
        ("events_2026_events_key", True),
        ("events_2026_events_lower_idx", False),
    ]
    rec = Recorder()
    ran = commands.expand(plan, opts(db, rec)).ran
    assert ran[:4] == [
        "0.attach_partition.attach-index-events_lower_idx",
        "0.attach_partition.attach-index-events_payload_idx",
        "0.attach_partition.attach-index-events_pkey",
        "0.attach_partition.attach-index-events_pkey-constraint",
    ]
    assert [s.split(" ON ")[0] for _, s, _ in rec.statements if s.startswith("CREATE")] == [
        second,
        "CREATE INDEX CONCURRENTLY events_2026_events_payload_idx",
        "CREATE UNIQUE INDEX CONCURRENTLY events_2026_events_pkey",
    ]
    after = q(db, PARTITION_INDEXES)
    assert after[0][:2] == left[0][:2]  # the first index: the same oid, not rebuilt
    assert [(n, v, p) for n, _, v, p, _ in after] == [(n, v, p) for n, v, p, _ in ATTACHED_COPIES]
    assert q(db, "SELECT relispartition FROM pg_class WHERE relname = 'events_2026'") == [(True,)]


def test_foreign_key_on_a_partitioned_table(db: str) -> None:
    """The suite's whole release on both versions: PostgreSQL 18 adds the key NOT VALID
    on the table and validates it in the contract; 15 adds it NOT VALID to each leaf
    partition, validates each, then adds it to the sub-partitioned partition and the
    table, which attach those without a scan. Its statements pass the lint (the last
    ones are known to attach what the leaves hold)."""
    run_release_case(FOREIGN_KEY, db)
    q(db, "DROP SCHEMA public CASCADE; CREATE SCHEMA public; DROP SCHEMA migrator CASCADE")
    test_statements_pass_the_lint_rules(FOREIGN_KEY, db)


def test_foreign_key_per_partition_attaches_without_a_scan(db: str) -> None:
    """Before 18 the key is added to the table last, once every leaf holds it validated;
    PostgreSQL attaches the leaves' keys and scans nothing. Proven by a row that breaks
    the key slipped into a leaf just before that statement (replica mode skips the key's
    trigger): a scan would refuse the ADD; the ADD goes through and the row is still
    there. Each leaf is its own pair of steps; on 18 the table takes it NOT VALID."""
    q(db, FOREIGN_KEY.setup)
    plan = parse_plan(plan_text(FOREIGN_KEY.expand))
    version = int(q(db, "SHOW server_version_num")[0][0])  # type: ignore[call-overload]
    parent = "ALTER TABLE public.events ADD CONSTRAINT events_user_fkey"

    class Slip(Recorder):
        def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
            super().statement(sql, step=step, autocommit=autocommit, dry_run=dry_run)
            if sql.startswith(parent) and version < 180000:
                with psycopg.connect(db, autocommit=True) as conn:
                    conn.execute("SET session_replication_role = replica")
                    conn.execute(
                        "INSERT INTO events_2024 (id, at, kind, user_id) "
                        "VALUES (9999, '2024-02-02', 'a', 424242)"
                    )

    rec = Slip()
    result = commands.expand(plan, opts(db, rec))
    if version >= 180000:
        assert result.ran == ["0.add_foreign_key.add-foreign-key"]
        assert [s for _, s, _ in rec.statements][-1].endswith("NOT VALID")
        return
    assert result.ran == [
        "0.add_foreign_key.add-foreign-key-events_2025_a",
        "0.add_foreign_key.add-foreign-key-events_2025_a-validate",
        "0.add_foreign_key.add-foreign-key-events_2025_b",
        "0.add_foreign_key.add-foreign-key-events_2025_b-validate",
        "0.add_foreign_key.add-foreign-key-events_2024",
        "0.add_foreign_key.add-foreign-key-events_2024-validate",
        "0.add_foreign_key.add-foreign-key-events_2025",
        "0.add_foreign_key.add-foreign-key",
    ]
    assert q(db, "SELECT count(*) FROM events WHERE user_id = 424242") == [(1,)]
    assert q(
        db,
        "SELECT conrelid::regclass::text, convalidated, conparentid <> 0 FROM pg_constraint "
        "WHERE conname = 'events_user_fkey' ORDER BY 1",
    ) == [
        ("events", True, False),
        ("events_2024", True, True),
        ("events_2025", True, True),
        ("events_2025_a", True, True),
        ("events_2025_b", True, True),
    ]


def test_foreign_key_per_partition_resumes_at_the_partition_it_stopped_at(db: str) -> None:
    """Before 18, a run stopped at one leaf (a writer holds it past lock_timeout and the
    retries) resumes there: the leaves done are not touched again. On 18 the one step
    on the table is what waits, and what the rerun runs."""
    q(db, FOREIGN_KEY.setup)
    plan = parse_plan(
        plan_text(FOREIGN_KEY.expand, lock_timeout="100ms").replace("retries: 2", "retries: 0")
    )
    version = int(q(db, "SHOW server_version_num")[0][0])  # type: ignore[call-overload]
    with psycopg.connect(db) as holder:
        # A writer's open transaction: the row count before the run reads past it.
        holder.execute("LOCK TABLE events_2025_b IN ROW EXCLUSIVE MODE")
        with pytest.raises(
            LockNotAcquired, match="events_2025_b" if version < 180000 else "add-foreign-key"
        ):
            commands.expand(plan, opts(db))
        holder.rollback()
    rec = Recorder()
    ran = commands.expand(plan, opts(db, rec)).ran
    if version >= 180000:
        assert ran == ["0.add_foreign_key.add-foreign-key"]
    else:
        assert ran == [
            "0.add_foreign_key.add-foreign-key-events_2025_b",
            "0.add_foreign_key.add-foreign-key-events_2025_b-validate",
            "0.add_foreign_key.add-foreign-key-events_2024",
            "0.add_foreign_key.add-foreign-key-events_2024-validate",
            "0.add_foreign_key.add-foreign-key-events_2025",
            "0.add_foreign_key.add-foreign-key",
        ]
        assert not any("events_2025_a" in sql for _, sql, _ in rec.statements)
    assert q(
        db,
        "SELECT count(*) FROM pg_constraint WHERE conname = 'events_user_fkey' "
        "AND convalidated = (current_setting('server_version_num')::int < 180000)",
    ) == [(5,)]


def test_foreign_key_on_a_partitioned_table_refuses_rows_that_break_it(db: str) -> None:
    """Rows of a partitioned table with no referenced row are counted before anything
    runs: one line, exit 2, nothing changed, on both versions."""
    q(db, FOREIGN_KEY.setup + "UPDATE events SET user_id = 7000 + id WHERE id IN (3, 4, 5);")
    before = schema_dump(db)
    with pytest.raises(ValidationFailed) as info:
        commands.expand(parse_plan(plan_text(FOREIGN_KEY.expand), "plan.yaml"), opts(db))
    assert str(info.value) == (
        "plan.yaml:4:5: add_foreign_key events_user_fkey: 3 rows of partitioned table events "
        "break the key (user_id not in users); fix or delete them first"
    )
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(db) == before


def test_lint_knows_a_partitioned_constraint_that_adopts_its_leaves(module_db: str) -> None:
    """ADD CONSTRAINT ... UNIQUE on a partitioned table is M008 (it builds every
    partition's index under its lock) unless each leaf got its own UNIQUE earlier in the
    same migration; likewise a validated foreign key (M005) unless each leaf's is
    validated first."""
    q(module_db, BASE + EVENTS + "ALTER TABLE events ADD COLUMN user_id bigint;")
    unique = "ALTER TABLE events ADD CONSTRAINT events_key UNIQUE (id, at, kind);"
    fk = (
        "ALTER TABLE {t} ADD CONSTRAINT events_user_fkey FOREIGN KEY (user_id) "
        "REFERENCES users (id){nv};"
    )
    leaves = ("events_2024", "events_2025_a", "events_2025_b")
    per_leaf_unique = "".join(
        f"ALTER TABLE {leaf} ADD CONSTRAINT {leaf}_key UNIQUE USING INDEX {leaf}_key;"
        for leaf in leaves
    )
    per_leaf_fk = "".join(
        fk.format(t=leaf, nv=" NOT VALID")
        + f"ALTER TABLE {leaf} VALIDATE CONSTRAINT events_user_fkey;"
        for leaf in leaves
    )
    engine = make_engine(module_db)
    try:
        with connect(engine) as conn:

            def rules(sql: str) -> set[str]:
                found = lint_sql(sql, 150000, catalog=Catalog(conn), assume_in_transaction=False)
                return {f.rule for f in found if f.severity == "error"}

            assert "M008" in rules(unique)
            assert "M008" in rules(per_leaf_unique.split(";")[0] + ";" + unique)  # one leaf only
            assert "M008" not in rules(per_leaf_unique + unique)
            primary = "ALTER TABLE events ADD PRIMARY KEY (id, at, kind);"
            per_leaf_primary = per_leaf_unique.replace("UNIQUE", "PRIMARY KEY")
            assert "M009" in rules(primary)
            assert "M009" not in rules(per_leaf_primary + primary)
            assert "M005" in rules(fk.format(t="events", nv=""))
            assert "M005" not in rules(per_leaf_fk + fk.format(t="events", nv=""))
    finally:
        engine.dispose()


def test_add_column_references_resumes_at_the_partition_it_stopped_at(db: str) -> None:
    """add_column's key takes add_foreign_key's route: before 18, stopped at one leaf (a
    writer takes it once the first leaf's key is on its way and holds it past
    lock_timeout), the rerun resumes there and leaves the leaf done alone; on 18 the one
    step on the table is what waits and what the rerun runs. Validated on 15 by the
    expand (the contract has nothing left of it), NOT VALID on 18 until the contract."""
    q(db, BASE + EVENTS)
    plan = parse_plan(
        plan_text(
            """
            - add_column:
                table: events
                column: {name: user_id, type: bigint, references: {table: users, column: id}}
                up: "1 + id % 50"
            """,
            lock_timeout="100ms",
        ).replace("retries: 2", "retries: 0")
    )
    version = int(q(db, "SHOW server_version_num")[0][0])  # type: ignore[call-overload]
    holder = psycopg.connect(db)

    class Writer(Recorder):
        def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
            super().statement(sql, step=step, autocommit=autocommit, dry_run=dry_run)
            if "FOREIGN KEY" in sql and holder.info.transaction_status == TransactionStatus.IDLE:
                # A writer's open transaction on a leaf not reached yet (idle: take it once).
                holder.execute("LOCK TABLE events_2025_b IN ROW EXCLUSIVE MODE")

    try:
        with pytest.raises(
            LockNotAcquired, match="events_2025_b" if version < 180000 else "foreign-key "
        ):
            commands.expand(plan, opts(db, Writer()))
    finally:
        holder.rollback()
        holder.close()
    rec = Recorder()
    ran = [k for k in commands.expand(plan, opts(db, rec)).ran if "foreign-key" in k]
    if version >= 180000:
        assert ran == ["0.add_column.foreign-key"]
    else:
        assert ran == [
            "0.add_column.foreign-key-events_2025_b",
            "0.add_column.foreign-key-events_2025_b-validate",
            "0.add_column.foreign-key-events_2024",
            "0.add_column.foreign-key-events_2024-validate",
            "0.add_column.foreign-key-events_2025",
            "0.add_column.foreign-key",
        ]
        assert not any("events_2025_a" in sql for _, sql, _ in rec.statements)
    validated = version < 180000
    keys = (
        "SELECT count(*) FILTER (WHERE convalidated), count(*) FROM pg_constraint "
        "WHERE conname = 'events_user_id_fkey'"
    )
    assert q(db, keys) == [(5 if validated else 0, 5)]
    commands.backfill(plan, opts(db))
    commands.complete(plan, opts(db))
    contract = Recorder()
    commands.contract(opts(db, contract))
    assert any(
        "VALIDATE CONSTRAINT events_user_id_fkey" in s for _, s, _ in contract.statements
    ) == (not validated)
    assert q(db, keys) == [(5, 5)]


def test_add_column_references_refuses_a_partition_constraint_of_its_name(db: str) -> None:
    """The key's name on every partition (PostgreSQL's clones on 18, the leaves' own on
    15): a partition holding a constraint of that name is refused as add_foreign_key
    refuses it, one line at the plan's line, exit 2, nothing changed."""
    q(
        db,
        BASE
        + EVENTS
        + "ALTER TABLE events_2024 ADD CONSTRAINT events_user_id_fkey CHECK (id > 0);",
    )
    before = schema_dump(db)
    plan = parse_plan(
        plan_text(
            "- add_column: {table: events, column: {name: user_id, type: bigint, "
            "references: {table: users, column: id}}}"
        ),
        "plan.yaml",
    )
    with pytest.raises(ValidationFailed) as info:
        commands.expand(plan, opts(db))
    assert str(info.value) == (
        "plan.yaml:4:5: add_column events.user_id: column.references: partition events_2024 "
        "already has a constraint named events_user_id_fkey"
    )
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(db) == before
