"""Partitioned tables (issue 16, section 3): foreign keys on a partitioned table
(add_foreign_key's, and add_column's references, which take its route), on PostgreSQL
18 and 15, and the lint's knowledge of a constraint that adopts its leaves'.

Split from tests/test_ops_partitions.py (the table-driven cases and the setups these
use) so that pytest-xdist's loadfile spreads the work. PostgreSQL 18 adds the key NOT
VALID on the table; 15 leaf by leaf, validated, then on the table without a scan.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from migrator import commands
from migrator.db.connection import connect, make_engine
from migrator.engine.catalog import Catalog
from migrator.engine.catalog_partitions import partitions
from migrator.errors import ExitCode, LockNotAcquired, ValidationFailed
from migrator.lint.sources import lint_sql
from migrator.ops.partitioned import partition_index_name
from migrator.plan.loader import parse_plan
from tests.support.catalog_snapshot import schema_dump
from tests.support.ops_suite import BASE, Case, Recorder, opts, plan_text, q, run_release_case
from tests.test_ops_partitions import EVENTS, statements_pass_the_lint_rules

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


def test_foreign_key_on_a_partitioned_table(db: str) -> None:
    """The suite's whole release on both versions: PostgreSQL 18 adds the key NOT VALID
    on the table and validates it in the contract; 15 adds it NOT VALID to each leaf
    partition, validates each, then adds it to the sub-partitioned partition and the
    table, which attach those without a scan. Its statements pass the lint (the last
    ones are known to attach what the leaves hold)."""
    run_release_case(FOREIGN_KEY, db)
    q(db, "DROP SCHEMA public CASCADE; CREATE SCHEMA public; DROP SCHEMA migrator CASCADE")
    statements_pass_the_lint_rules(FOREIGN_KEY, db)


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
    # The rollback drops the table's key, which takes the attached ones with it: one
    # lock on the referenced table, not one more per partition (review finding).
    rec = Recorder()
    commands.rollback(plan, opts(db, rec))
    assert [s for _, s, _ in rec.statements if s.startswith("LOCK TABLE")] == [
        "LOCK TABLE ONLY public.users IN ACCESS EXCLUSIVE MODE"
    ]
    assert q(db, "SELECT count(*) FROM pg_constraint WHERE conname = 'events_user_fkey'") == [(0,)]


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


def test_unique_on_partitions_of_one_name_in_two_schemas_is_a_step_each(fresh_db: str) -> None:
    """add_unique on a partitioned table gives each leaf its own UNIQUE, a step each: two
    leaves named alike in two schemas had one step key, so a rerun after the first was
    done skipped the second as done, and the table's ADD built that leaf's index under
    its lock instead of adopting one. The leaf in the table's schema keeps its old key."""
    q(
        fresh_db,
        "CREATE SCHEMA other;"
        "CREATE TABLE events (id int NOT NULL, payload text) PARTITION BY RANGE (id);"
        "CREATE TABLE public.part PARTITION OF events FOR VALUES FROM (0) TO (100);"
        "CREATE TABLE other.part PARTITION OF events FOR VALUES FROM (100) TO (200);"
        "INSERT INTO events SELECT g, 'p' || g FROM generate_series(0, 199) g",
    )
    plan = parse_plan(
        plan_text(
            "- add_unique: {table: events, name: events_key, columns: [id]}",
            lock_timeout="100ms",
        ).replace("retries: 2", "retries: 0")
    )
    engine = make_engine(fresh_db)
    with connect(engine) as conn:  # in the order the expand builds them
        (first, second) = [p.schema for p in partitions(Catalog(conn), "public", "events")]
    engine.dispose()
    holder = psycopg.connect(fresh_db)

    class Writer(Recorder):
        def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
            super().statement(sql, step=step, autocommit=autocommit, dry_run=dry_run)
            if sql.startswith(f"ALTER TABLE {first}.part ADD CONSTRAINT"):
                # The second leaf is held once the first's constraint is on its way.
                holder.execute(f"LOCK TABLE {second}.part IN ACCESS EXCLUSIVE MODE")

    try:
        with pytest.raises(LockNotAcquired):
            commands.expand(plan, opts(fresh_db, Writer()))
    finally:
        holder.rollback()
        holder.close()
    result = commands.expand(plan, opts(fresh_db))
    leaf = f"0.add_unique.unique-{'other.' if second == 'other' else ''}part"
    assert result.ran == [f"{leaf}-index", f"{leaf}-constraint", "0.add_unique.unique"]
    own = partition_index_name("part", "events_key")
    assert q(
        fresh_db,
        "SELECT conrelid::regclass::text, conname, conparentid <> 0 FROM pg_constraint "
        "WHERE contype = 'u' AND conname LIKE '%events_key' ORDER BY 1",
    ) == [("events", "events_key", False), ("other.part", own, True), ("part", own, True)]
