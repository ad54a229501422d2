"""Partitioned tables (issue 16, section 3): attach_partition and detach_partition, on
PostgreSQL 18 and 15 (the exclusion constraint's on 18 only).

Split from tests/test_ops_partitions.py (the other operations' cases, the setups these
use and the release and lint helpers) so that pytest-xdist's loadfile spreads the work.
The table-driven suite's whole release for attach and detach; then, before the ATTACH
runs, every index of the parent is on the table (the same oids after it), a NOT NULL is
set without a scan, a sub-partitioned table builds and scans nothing under the attach's
lock, an exclusion constraint is added first, and an interrupted index build resumes.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from migrator import commands
from migrator.db.connection import connect, make_engine
from migrator.engine.catalog import Catalog
from migrator.errors import ExitCode, LockNotAcquired, ValidationFailed
from migrator.lint.sources import lint_plan
from migrator.plan.loader import parse_plan
from tests.support.catalog_snapshot import schema_dump
from tests.support.ops_suite import BASE, Case, Recorder, opts, plan_text, q, run_release_case
from tests.support.servers import Server
from tests.test_ops_partitions import (
    ATTACHED_COPIES,
    EVENTS,
    INDEXED_PARENT,
    NULLABLE_TO_ATTACH,
    PARTITION_INDEXES,
    SUB_ATTACHED,
    SUB_PARTITIONED_TO_ATTACH,
    SUB_TREE_INDEXES,
    TO_ATTACH,
    release_with_no_failed_statement,
    statements_pass_the_lint_rules,
)

ATTACH_CASES = [
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


@pytest.mark.parametrize("case", ATTACH_CASES, ids=[c.id for c in ATTACH_CASES])
def test_operation_release(case: Case, server: Server, db: str) -> None:
    """The suite's whole release, as tests/test_ops_partitions.py runs its cases: no
    statement of it failed, not even one retried after a lock timeout."""
    release_with_no_failed_statement(case, server, db)


@pytest.mark.parametrize("case", ATTACH_CASES, ids=[c.id for c in ATTACH_CASES])
def test_statements_pass_the_lint_rules(case: Case, db: str) -> None:
    """Every statement, held to docs/lint-rules.md by migrator's linter on the live catalog."""
    statements_pass_the_lint_rules(case, db)


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
        # The contract clears the build mark of the leaf's index in the other schema too.
        (
            "SELECT obj_description('side.rooms_2_z_rooms_no_overlap'::regclass, 'pg_class')",
            [(None,)],
        ),
    ],
)


def test_attach_adds_the_parents_exclusion_to_a_sub_partitioned_table(fresh_db: str) -> None:
    """A table to attach that is itself partitioned (by the key the constraint compares
    with =), one leaf in another schema: each leaf gets the constraint by add_exclusion's
    steps, then the table, adopting theirs (one constraint per leaf, no second build);
    the attach adopts that. The whole release (a dry run, a rerun, both versions' writes,
    the rollback leaving the catalog as it was, expand again, the contract clearing the
    build mark of the leaf in another schema), on 18 (before: refused)."""
    keys = run_release_case(SUB_EXCLUSION, fresh_db)
    assert [k.removeprefix("0.attach_partition.") for k in keys if "overlap" in k] == [
        f"attach-{leaf}-index-rooms_no_overlap-exclusion-{s}"
        for leaf in ("rooms_2_a", "rooms_2_z")
        for s in ("helper-index", "guard", "constraint", "drop-helper")
    ] + ["attach-index-rooms_no_overlap-constraint"]


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
        (
            # The level partitioned off the key lives in another schema (review finding:
            # its key was looked up in the plan's schema, found empty, and the expand
            # failed at the ADD CONSTRAINT, exit 4, after building the leaves' copies).
            "DROP TABLE rooms_2; CREATE TABLE rooms_2 (LIKE rooms) PARTITION BY LIST (room);"
            "CREATE SCHEMA side; CREATE TABLE side.rooms_2_s PARTITION OF rooms_2 "
            "FOR VALUES IN (2) PARTITION BY LIST (note);"
            "CREATE TABLE side.rooms_2_n PARTITION OF side.rooms_2_s FOR VALUES IN ('n');",
            "plan.yaml:4:5: attach_partition rooms_2: the attach would build exclusion "
            "constraint rooms_no_overlap's index on rooms_2 under its lock, and rooms_2 is "
            "partitioned by note, which rooms_no_overlap does not compare with =",
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


def test_attach_of_a_tree_with_partitions_of_one_name_in_two_schemas(fresh_db: str) -> None:
    """The parent's index on a sub-partitioned table to attach is built level by level,
    a step each: two partitions named alike in two schemas (public.sub, other.sub, each
    with a leaf) had one step key, and a leaf's index was attached to its parent's named
    in the plan's schema (the other tree's), which PostgreSQL refuses."""
    q(
        fresh_db,
        "CREATE SCHEMA other;"
        "CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, kind text NOT NULL,"
        " payload text) PARTITION BY RANGE (at);"
        "CREATE TABLE events_2025 PARTITION OF events"
        " FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
        "CREATE INDEX events_payload_idx ON events (payload);"
        "CREATE TABLE events_2026 (LIKE events) PARTITION BY LIST (kind);"
        "CREATE TABLE public.sub PARTITION OF events_2026 FOR VALUES IN ('a')"
        " PARTITION BY RANGE (id);"
        "CREATE TABLE public.leaf PARTITION OF public.sub FOR VALUES FROM (0) TO (1000);"
        "CREATE TABLE other.sub PARTITION OF events_2026 FOR VALUES IN ('b')"
        " PARTITION BY RANGE (id);"
        "CREATE TABLE other.leaf PARTITION OF other.sub FOR VALUES FROM (0) TO (1000);"
        "INSERT INTO events_2026 SELECT g, DATE '2026-01-01' + g,"
        " CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, 'n' || g FROM generate_series(1, 40) g",
    )
    plan = parse_plan(
        plan_text(
            """
            - attach_partition:
                table: events
                partition: events_2026
                bound: "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
            """
        )
    )
    ran = commands.expand(plan, opts(fresh_db)).ran
    built = [k.rsplit("events_payload_idx-", 1)[1] for k in ran if "events_payload_idx-" in k]
    assert sorted(built) == ["leaf", "other.leaf", "other.sub", "sub"], ran
    # Each index attached to the one of its own table's parent, all valid.
    assert q(
        fresh_db,
        "SELECT t.oid::regclass::text, pt.oid::regclass::text, i.indisvalid FROM pg_index i "
        "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_inherits h ON h.inhrelid = i.indexrelid "
        "JOIN pg_index pi ON pi.indexrelid = h.inhparent JOIN pg_class pt ON pt.oid = pi.indrelid "
        "WHERE t.relname IN ('events_2026', 'sub', 'leaf') ORDER BY 1",
    ) == [
        ("events_2026", "events", True),
        ("leaf", "sub", True),
        ("other.leaf", "other.sub", True),
        ("other.sub", "events_2026", True),
        ("sub", "events_2026", True),
    ]
