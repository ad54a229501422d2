"""Exclusion constraints (issue 16 section 6): `add_exclusion` on a table that exists, and
the operator check of create_table's `exclude` and add_exclusion before anything runs,
the releases on PostgreSQL 18 and 15, the refusals (the same on both) on 18.

The release cases go through tests/support/ops_suite.py's whole release (reads and
writes of both versions after expand, rollback to the same pg_dump --schema-only, the
contract's checksums, reruns, the lock-safe forms) and migrator's own lint. Then the bad
input: one line at file:line:column, exit 2, nothing changed; and the expand's guard on a
table too big to count conflicts before anything runs (exit 3, at file:line:column).
"""

from __future__ import annotations

import random
import re

import pytest

from migrator import commands
from migrator.db.connection import connect, make_engine
from migrator.engine.catalog import Catalog
from migrator.engine.catalog_tables import (
    exclusion_conflicts,
    exclusion_sweep,
    exclusion_sweep_key,
)
from migrator.errors import ExitCode, GateRefused, ValidationFailed
from migrator.lint.sources import lint_plan
from migrator.plan.loader import parse_plan
from tests.support.catalog_snapshot import schema_dump
from tests.support.ops_suite import (
    BASE,
    Case,
    opts,
    plan_text,
    q,
    release_rows,
    run_release_case,
)

BOOKINGS = (
    BASE
    + """
CREATE TABLE bookings (id bigserial PRIMARY KEY, room int NOT NULL, during tstzrange NOT NULL,
                       starts date, ends date, cancelled boolean NOT NULL DEFAULT false);
INSERT INTO bookings (room, during, starts, ends, cancelled)
SELECT g % 5, tstzrange('2026-01-01'::timestamptz + g * interval '1 day',
                        '2026-01-01'::timestamptz + (g + 1) * interval '1 day'),
       '2026-01-01'::date + g, '2026-01-01'::date + g + 1, g % 7 = 0
FROM generate_series(1, 40) g;
"""
)

CONSTRAINTS = (
    "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid = 'bookings'::regclass AND contype = 'x' ORDER BY 1"
)
# The helper index is gone once the constraint stands.
HELPERS = "SELECT count(*) FROM pg_class WHERE relname LIKE '\\_migrator\\_%probe'"

CASES = [
    Case(
        "add_exclusion over a column",
        setup=BOOKINGS,
        expand="""
        - add_exclusion:
            table: bookings
            name: bookings_no_overlap
            elements: [{column: during, with: "&&"}]
        """,
        old=[
            # Run again after the rollback: written not to clash with itself.
            "INSERT INTO bookings (room, during) SELECT 1, tstzrange('2030-01-01', '2030-01-02') "
            "WHERE NOT EXISTS (SELECT FROM bookings WHERE during && '[2030-01-01,2030-01-02)')",
            "UPDATE bookings SET room = 2 WHERE id = 3",
        ],
        new=[
            "INSERT INTO bookings (room, during) SELECT 1, tstzrange('2031-01-01', '2031-01-02') "
            "WHERE NOT EXISTS (SELECT FROM bookings WHERE during && '[2031-01-01,2031-01-02)')",
            "SELECT count(*) FROM bookings WHERE during && tstzrange('2026-01-05', '2026-01-07')",
        ],
        final=[
            (CONSTRAINTS, [("bookings_no_overlap", "EXCLUDE USING gist (during WITH &&)")]),
            (HELPERS, [(0,)]),
        ],
    ),
    Case(
        "add_exclusion over an expression, with where",
        setup=BOOKINGS,
        expand="""
        - add_exclusion:
            table: bookings
            name: bookings_dates_free
            using: gist
            elements: [{column: "daterange(starts, ends)", with: "&&"}]
            where: "NOT cancelled"
        """,
        old=[
            # A cancelled booking may overlap: the WHERE leaves it out.
            "INSERT INTO bookings (room, during, starts, ends, cancelled) VALUES "
            "(1, tstzrange('2030-01-01', '2030-01-02'), '2026-01-05', '2026-01-09', true)",
        ],
        new=[
            "INSERT INTO bookings (room, during, starts, ends) VALUES "
            "(1, tstzrange('2031-01-01', '2031-01-02'), '2031-01-01', '2031-01-02')",
        ],
        final=[
            (
                CONSTRAINTS,
                [
                    (
                        "bookings_dates_free",
                        "EXCLUDE USING gist (daterange(starts, ends) WITH &&) WHERE ((NOT cancelled))",
                    )
                ],
            ),
            (HELPERS, [(0,)]),
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_operation_release(case: Case, db: str) -> None:
    run_release_case(case, db)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_statements_pass_the_lint_rules(case: Case, db: str) -> None:
    """Every statement add_exclusion writes, through migrator's own linter on the live
    catalog: the ADD CONSTRAINT ... EXCLUDE is named for the lock it still holds through
    its build (M025), a warning since the operation built and timed the same index
    concurrently first; nothing else."""
    q(db, case.setup)
    plan = parse_plan(plan_text(case.expand, case.contract))
    engine = make_engine(db)
    try:
        with connect(engine) as conn:
            findings = lint_plan(plan, catalog=Catalog(conn))
    finally:
        engine.dispose()
    assert {(f.rule, f.severity) for f in findings} == {("M025", "warning")}, findings
    assert "built a gist index on it concurrently first" in findings[0].reason
    assert "measured before the lock, not shortened" in findings[0].reason


def test_the_exclusion_holds_after_expand(fresh_db: str) -> None:
    """The constraint is in force from the expand on: an overlapping write fails."""
    q(fresh_db, BOOKINGS)
    plan = parse_plan(plan_text(CASES[0].expand))
    commands.expand(plan, opts(fresh_db))
    with pytest.raises(Exception, match="bookings_no_overlap"):
        q(
            fresh_db,
            "INSERT INTO bookings (room, during) VALUES (1, tstzrange('2026-01-05', '2026-01-06'))",
        )


# -- bad input ------------------------------------------------------------------------------

REFUSAL_SETUP = (
    BOOKINGS
    + """
INSERT INTO bookings (room, during) VALUES (9, tstzrange('2026-01-10 12:00', '2026-01-11 12:00'));
ALTER TABLE orders ADD CONSTRAINT orders_amount_positive CHECK (amount >= 0);
CREATE INDEX bookings_room_idx ON bookings (room);
"""
)

# (id, expand, message); the plan's first operation is at line 4, column 5.
REFUSALS = [
    (
        "add_exclusion over rows that conflict",
        "- add_exclusion: {table: bookings, name: x, elements: [{column: during, with: '&&'}]}",
        "add_exclusion x: 2 pairs of rows of bookings conflict under the exclusion, e.g. "
        '(during) = (["2026-01-10 ',
    ),
    (
        "add_exclusion with an operator that does not exist",
        "- add_exclusion: {table: bookings, name: x, elements: [{column: during, with: '&&&'}]}",
        "add_exclusion x: PostgreSQL refuses the exclusion: operator does not exist: "
        "tstzrange &&& tstzrange",
    ),
    (
        "add_exclusion with an operator the type has no operator class for",
        "- add_exclusion: {table: bookings, name: x, elements: [{column: room, with: '&&'}]}",
        "add_exclusion x: PostgreSQL refuses the exclusion: data type integer has no default "
        'operator class for access method "gist" (the btree_gist extension',
    ),
    (
        "add_exclusion with an operator that is not commutative",
        "- add_exclusion: {table: bookings, name: x, elements: [{column: during, with: '@>'}]}",
        "is not commutative",
    ),
    (
        "add_exclusion named like a constraint the table has",
        "- add_exclusion: {table: orders, name: orders_amount_positive, "
        "elements: [{column: amount, with: '='}], using: btree}",
        "add_exclusion orders_amount_positive: orders already has a constraint named "
        "orders_amount_positive",
    ),
    (
        "add_exclusion named like an index of the schema",
        "- add_exclusion: {table: bookings, name: bookings_room_idx, "
        "elements: [{column: during, with: '&&'}]}",
        "a relation named public.bookings_room_idx already exists",
    ),
    (
        "add_exclusion over a column the table lacks",
        "- add_exclusion: {table: bookings, name: x, elements: [{column: nope, with: '&&'}]}",
        "add_exclusion x: public.bookings has no column nope",
    ),
    (
        "create_table exclude with an operator the type has no operator class for",
        "- create_table: {table: t, columns: [{name: a, type: int}], constraints: "
        "[{name: t_x, exclude: {elements: [{column: a, with: '&&'}]}}]}",
        "create_table t: constraint t_x: PostgreSQL refuses the exclusion: data type integer "
        'has no default operator class for access method "gist"',
    ),
    (
        "create_table exclude with an operator that does not exist",
        "- create_table: {table: t, columns: [{name: a, type: int4range}], constraints: "
        "[{name: t_x, exclude: {elements: [{column: a, with: '~~~'}]}}]}",
        "create_table t: constraint t_x: PostgreSQL refuses the exclusion: operator does not "
        "exist: int4range ~~~ int4range",
    ),
]


@pytest.mark.parametrize(
    ("expand", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_bad_input_is_one_line_at_its_place(fresh_db: str, expand: str, message: str) -> None:
    q(fresh_db, REFUSAL_SETUP)
    before = schema_dump(fresh_db)
    plan = parse_plan(plan_text(expand), "plans/r1.yaml")
    with pytest.raises(ValidationFailed) as err:
        commands.expand(plan, opts(fresh_db))
    line = str(err.value)
    assert re.match(r"plans/r1\.yaml:4:5: ", line), line
    assert message in line, line
    assert "\n" not in line
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(fresh_db) == before
    assert release_rows(fresh_db) == []


def test_create_table_exclude_with_btree_gist_is_taken(fresh_db: str) -> None:
    """The same `=` on an int column that the check refuses without btree_gist is taken
    once the extension gives int a gist operator class: the check asks PostgreSQL."""
    q(fresh_db, BASE + "CREATE EXTENSION btree_gist;")
    plan = parse_plan(
        plan_text(
            "- create_table: {table: t, columns: [{name: a, type: int}, {name: r, type: int4range}], "
            "constraints: [{name: t_x, exclude: {elements: [{column: a, with: '='}, "
            "{column: r, with: '&&'}]}}]}"
        )
    )
    commands.expand(plan, opts(fresh_db))
    assert q(fresh_db, "SELECT contype::text FROM pg_constraint WHERE conname = 't_x'") == [("x",)]


# A table past PRECHECK_BYTES: its conflicts are counted by the expand's guard, through
# the helper index, before the ACCESS EXCLUSIVE lock is taken.
BIG = (
    BASE
    + """
CREATE TABLE slots (id bigserial PRIMARY KEY, during int4range NOT NULL, pad text);
INSERT INTO slots (during, pad) SELECT int4range(g * 10, g * 10 + 5), repeat('x', 60)
FROM generate_series(1, 4000) g;
"""
)


def test_guard_refuses_conflicts_on_a_big_table_before_the_lock(fresh_db: str) -> None:
    """Conflicts in a table too big to count them before anything runs (adjacent ranges,
    -|-: no sort decides them): the guard refuses them, with the count and a pair, before
    the lock; fixed, the rerun goes on from it."""
    q(fresh_db, BIG + "INSERT INTO slots (during) VALUES (int4range(15, 20));")
    before = schema_dump(fresh_db)
    # max_lock_hold far above the build and check: the rerun passes the guard on the rows
    # alone, however loaded the machine (1s was passed at load 8: 0.15 s + 0.97 s).
    plan = parse_plan(
        plan_text(
            "- add_exclusion: {table: slots, name: slots_free, max_lock_hold: 10m, "
            "elements: [{column: during, with: '-|-'}]}"
        ),
        "plans/r1.yaml",
    )
    with pytest.raises(GateRefused) as err:
        commands.expand(plan, opts(fresh_db))
    line = str(err.value)
    assert line.startswith(
        "plans/r1.yaml:4:5: add_exclusion slots_free: 2 pair(s) of rows of slots conflict "
        "under the exclusion, e.g. (during) = "
    ), line
    # What was done, what is left, what to do: the helper index named, the pairs' rule.
    assert re.search(
        r"; slots is larger than 256 kB, too big to compare every pair of its rows before "
        r"anything changes, so they were counted through the helper index "
        r"public\._migrator_\w+_probe, built concurrently and left in place; nothing else "
        r"changed\. Change or delete one row of each pair \(two rows conflict where "
        r"during -\|- during holds between them\), then run `migrator expand` again: it goes "
        r"on from this check, with that index; or `migrator rollback`, which drops it$",
        line,
    ), line
    assert "\n" not in line
    assert err.value.exit_code == ExitCode.REFUSED
    # The constraint was never tried; the helper index is there, as the line says.
    assert q(fresh_db, "SELECT count(*) FROM pg_constraint WHERE conname = 'slots_free'") == [(0,)]
    assert q(fresh_db, HELPERS) == [(1,)]
    # The rows fixed, the same expand goes on from the guard: the constraint, no helper.
    q(fresh_db, "DELETE FROM slots WHERE during = int4range(15, 20)")
    ran = commands.expand(plan, opts(fresh_db)).ran
    assert [k.rsplit(".", 1)[1] for k in ran] == [
        "exclusion-guard",
        "exclusion-constraint",
        "exclusion-drop-helper",
    ]
    assert q(fresh_db, "SELECT count(*) FROM pg_constraint WHERE conname = 'slots_free'") == [(1,)]
    assert q(fresh_db, HELPERS) == [(0,)]
    # The rollback leaves the schema as it was.
    commands.rollback(plan, opts(fresh_db))
    assert schema_dump(fresh_db) == before


def test_overlaps_on_a_big_table_are_refused_before_anything(fresh_db: str) -> None:
    """`&&` over a range (with `=` over others: a booking's shape) on a table too big to
    compare every pair: one sort of the rows finds the conflict before anything runs,
    exit 2 at the operation's place, no helper index built."""
    q(fresh_db, BIG + "INSERT INTO slots (during) VALUES (int4range(12, 14));")
    before = schema_dump(fresh_db)
    plan = parse_plan(
        plan_text(
            "- add_exclusion: {table: slots, name: slots_free, "
            "elements: [{column: during, with: '&&'}]}"
        ),
        "plans/r1.yaml",
    )
    with pytest.raises(ValidationFailed) as err:
        commands.expand(plan, opts(fresh_db))
    assert str(err.value) == (
        "plans/r1.yaml:4:5: add_exclusion slots_free: 1 row(s) of slots conflict under the "
        "exclusion with another row, e.g. (during) = ([12,14)); fix them first"
    )
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(fresh_db) == before
    assert q(fresh_db, HELPERS) == [(0,)]
    assert release_rows(fresh_db) == []


def test_guard_refuses_a_build_slower_than_max_lock_hold(fresh_db: str) -> None:
    """The build, timed on the concurrent helper index, and the rows' check through it,
    above max_lock_hold: refused with the measured times, naming the route (a new table
    and a copy); the lock never taken."""
    q(fresh_db, BIG)
    before = schema_dump(fresh_db)
    plan = parse_plan(
        plan_text(
            "- add_exclusion: {table: slots, name: slots_free, max_lock_hold: 0s, "
            "elements: [{column: during, with: '&&'}]}"
        ),
        "plans/r1.yaml",
    )
    with pytest.raises(GateRefused) as err:
        commands.expand(plan, opts(fresh_db))
    line = str(err.value)
    assert re.match(
        r"plans/r1\.yaml:4:5: add_exclusion slots_free: its index took [0-9.]+ s to build "
        r"concurrently and its rows [0-9.]+ s to verify through it, above max_lock_hold 0s?; "
        r"ADD CONSTRAINT \.\.\. EXCLUDE does both while it holds ACCESS EXCLUSIVE on slots\. "
        r"Create a new table with the constraint",
        line,
    ), line
    assert err.value.exit_code == ExitCode.REFUSED
    assert q(fresh_db, "SELECT count(*) FROM pg_constraint WHERE conname = 'slots_free'") == [(0,)]
    commands.rollback(plan, opts(fresh_db))
    assert schema_dump(fresh_db) == before


# A column an earlier operation of the plan adds: the operators are tried on the empty
# copy of the table with that column added (as add_check plans over it), before anything.
ADDED_THEN_EXCLUDED = """
- add_column: {table: bookings, column: {name: slot, type: int4range}}
- add_exclusion: {table: bookings, name: x, elements: [{column: slot, with: '%s'}]}
"""


@pytest.mark.parametrize(
    ("operator", "message"),
    [
        ("&&&", "operator does not exist: int4range &&& int4range"),
        ("@>", "is not commutative"),
    ],
)
def test_exclusion_over_a_column_the_plan_adds_is_tried_first(
    fresh_db: str, operator: str, message: str
) -> None:
    q(fresh_db, REFUSAL_SETUP)
    before = schema_dump(fresh_db)
    plan = parse_plan(plan_text(ADDED_THEN_EXCLUDED % operator), "plans/r1.yaml")
    with pytest.raises(ValidationFailed) as err:
        commands.expand(plan, opts(fresh_db))
    line = str(err.value)
    assert line.startswith(
        "plans/r1.yaml:5:5: add_exclusion x: PostgreSQL refuses the exclusion: "
    ), line
    assert message in line, line
    assert "\n" not in line
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(fresh_db) == before
    assert release_rows(fresh_db) == []


def test_exclusion_over_a_column_the_plan_adds_is_taken(fresh_db: str) -> None:
    """The right operator over the added column passes the same check, and the expand
    adds the column and then the constraint."""
    q(fresh_db, REFUSAL_SETUP)
    commands.expand(parse_plan(plan_text(ADDED_THEN_EXCLUDED % "&&")), opts(fresh_db))
    assert q(fresh_db, CONSTRAINTS) == [("x", "EXCLUDE USING gist (slot WITH &&)")]


# The sweep that finds conflicts of `=` + `&&` without an index, held to the self-join
# (every pair compared) on random ranges: bounds drawn from few values so that ties,
# touching bounds of each inclusivity, unbounded ends, empty and NULL ranges all occur.
SWEEP_TRIALS = 300


def _random_ranges(seed: int) -> str:
    rng = random.Random(seed)
    values = []
    for trial in range(SWEEP_TRIALS):
        for _ in range(rng.randint(0, 7)):
            room = rng.choice(["1", "2", "NULL"]) if trial % 3 else "1"
            if rng.random() < 0.08:
                during = rng.choice(["NULL", "'empty'::numrange"])
            else:
                low, high = sorted(rng.choice([0, 1, 2, 3, 4]) for _ in range(2))
                low_s = "NULL" if rng.random() < 0.1 else str(low)
                high_s = "NULL" if rng.random() < 0.1 else str(high)
                bounds = rng.choice(["[)", "[]", "()", "(]"])
                during = f"numrange({low_s}, {high_s}, '{bounds}')"
            values.append(f"({trial}, {room}, {during})")
    return (
        "CREATE TABLE sweep (trial int, room int, during numrange);"
        f"INSERT INTO sweep VALUES {', '.join(values)};"
    )


def test_the_sweep_finds_a_conflict_exactly_when_pairs_do(fresh_db: str) -> None:
    q(fresh_db, _random_ranges(16))
    engine = make_engine(fresh_db)
    try:
        with connect(engine) as conn:
            cat = Catalog(conn)
            for keys, ops in ((["room", "during"], ["=", "&&"]), (["during"], ["&&"])):
                at = exclusion_sweep_key(cat, "public", "sweep", keys, ops)
                assert at == keys.index("during")
                for trial in range(SWEEP_TRIALS):
                    where = f"trial = {trial}"
                    pairs, _ = exclusion_conflicts(cat, "public", "sweep", keys, ops, where)
                    rows, example = exclusion_sweep(cat, "public", "sweep", keys, at, where)
                    assert (rows > 0) == (pairs > 0), (trial, keys, pairs, rows)
                    assert rows <= 2 * pairs
                    assert (example is None) == (rows == 0)
            # Shapes it cannot sweep exactly: left to the index.
            assert exclusion_sweep_key(cat, "public", "sweep", ["during"], ["@>"]) is None
            assert exclusion_sweep_key(cat, "public", "sweep", ["room"], ["&&"]) is None
            assert (
                exclusion_sweep_key(cat, "public", "sweep", ["room", "during"], ["<>", "&&"])
                is None
            )
    finally:
        engine.dispose()


def test_add_exclusion_on_a_table_the_plan_creates_is_tried_before_anything_runs(
    fresh_db: str,
) -> None:
    """The operators are tried on an empty table of the planned columns (create_table's,
    then add_column's): a wrong one is refused at its place, exit 2, nothing changed
    (before: not tried, and the expand failed at its ADD CONSTRAINT after the CREATE
    TABLE ran); the right one goes through."""
    q(fresh_db, REFUSAL_SETUP)
    before = schema_dump(fresh_db)
    created = (
        "- create_table: {table: t, columns: [{name: id, type: bigint}], primary_key: [id]}\n"
        "- add_column: {table: t, column: {name: during, type: tstzrange}}\n"
    )
    wrong = "- add_exclusion: {table: t, name: t_x, elements: [{column: id, with: '&&'}]}"
    plan = parse_plan(plan_text(created + wrong), "plans/r1.yaml")
    with pytest.raises(ValidationFailed) as err:
        commands.expand(plan, opts(fresh_db))
    line = str(err.value)
    assert line.startswith(
        "plans/r1.yaml:6:5: add_exclusion t_x: PostgreSQL refuses the exclusion: data type "
        'bigint has no default operator class for access method "gist"'
    ), line
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(fresh_db) == before
    assert release_rows(fresh_db) == []
    right = wrong.replace("id, with: '&&'", "during, with: '&&'")
    commands.expand(parse_plan(plan_text(created + right)), opts(fresh_db))
    assert q(fresh_db, "SELECT contype::text FROM pg_constraint WHERE conname = 't_x'") == [("x",)]
