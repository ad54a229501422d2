"""Partitioned tables (issue 16, section 3), on PostgreSQL 18 and 15.

Each operation that applies to a table, on a partitioned one, through the table-driven
suite's whole release (tests/support/ops_suite.py); then what only partitions have: an
index build resumed between partitions, a partition created mid-release getting the
sync trigger and the indexes, and the bad bounds refused. Attach and detach are in
tests/test_ops_partitions_attach.py, foreign keys in tests/test_ops_partitions_keys.py
(one file each so that pytest-xdist's loadfile spreads the work); they use the setups
and helpers here.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from migrator import commands
from migrator.db.connection import connect, make_engine
from migrator.engine.catalog import Catalog
from migrator.engine.catalog_partitions import partitions
from migrator.errors import ExitCode, LockNotAcquired, ValidationFailed
from migrator.lint.sources import lint_plan
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
    release_with_no_failed_statement(case, server, db)


def release_with_no_failed_statement(case: Case, server: Server, db: str) -> None:
    """run_release_case, and no statement of it failed in the server's log."""
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
    statements_pass_the_lint_rules(case, db)


def statements_pass_the_lint_rules(case: Case, db: str) -> None:
    """A case's plan linted on its setup: only the findings EXPECTED_LINT names, warnings."""
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


def test_partitions_of_one_name_in_two_schemas_are_two_steps(fresh_db: str) -> None:
    """A partitioned index is built partition by partition, a step each: two partitions
    named alike in two schemas had one step key, so a rerun after the first was built
    skipped the second as done."""
    q(
        fresh_db,
        "CREATE SCHEMA other;"
        "CREATE TABLE events (id int, payload text) PARTITION BY RANGE (id);"
        "CREATE TABLE public.part PARTITION OF events FOR VALUES FROM (0) TO (100);"
        "CREATE TABLE other.part PARTITION OF events FOR VALUES FROM (100) TO (200);",
    )
    plan = parse_plan(
        plan_text(
            "- create_index: {table: events, name: events_payload_idx, columns: [payload]}",
            lock_timeout="100ms",
        ).replace("retries: 2", "retries: 0")
    )
    engine = make_engine(fresh_db)
    with connect(engine) as conn:  # in the order the expand builds them
        (first, second) = [p.schema for p in partitions(Catalog(conn), "public", "events")]
    engine.dispose()
    # The second is held: the first run builds the first partition's index, then stops.
    with psycopg.connect(fresh_db) as holder:
        holder.execute(f"LOCK TABLE {second}.part IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(LockNotAcquired):
            commands.expand(plan, opts(fresh_db))
        holder.rollback()
    result = commands.expand(plan, opts(fresh_db))
    assert [k for k in result.ran if "create_index" in k] == [
        f"0.create_index.create-index-{'other.' if second == 'other' else ''}part",
        "0.create_index.create-index-done",
    ]
    assert all(valid for _, valid, _ in q(fresh_db, _indexes("events")))
    assert len(q(fresh_db, _indexes("events"))) == 3
