"""A step that adds or drops a foreign key takes the referenced table's lock first, the
order an application's transaction takes them in (a parent row, then its child).

PostgreSQL's ADD FOREIGN KEY and DROP CONSTRAINT lock the referencing table first, then
the referenced one. A step waiting for the referenced table (an application
transaction has written a user) while it held the referencing one stalled that
transaction's next write (its order) until the step's lock_timeout. Here the
application writes a user, the step is seen waiting for users in pg_locks, then the
application writes an order: it must never be seen blocked (pg_blocking_pids). The
database waits for no deadlock check (deadlock_timeout 1h), so a stall stays a stall
until the test sees it. Every moment is waited for in pg_locks, never for a time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from migrator import commands
from migrator.errors import ValidationFailed
from migrator.observer import Observer
from migrator.plan.loader import parse_plan
from tests.support.servers import Server

SEED = """
CREATE TABLE users (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
CREATE TABLE orders (id int GENERATED ALWAYS AS IDENTITY, user_id int REFERENCES users (id));
INSERT INTO users DEFAULT VALUES;
INSERT INTO orders (user_id) VALUES (1);
"""


def seeded(url: str, seed: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(seed)
        # A stall must stay one until the test sees it: no deadlock check ends it.
        conn.execute(f"ALTER DATABASE {conn.info.dbname} SET deadlock_timeout = '1h'")
    return url


def opts(url: str) -> commands.Options:
    return commands.Options(
        database_url=url, observer=Observer(), force=True, force_reason="test: no old version"
    )


def until(url: str, query: str, what: str, alive: Callable[[], bool]) -> list[tuple[object, ...]]:
    """Poll until ``query`` finds a row (the bound only ends a test that went wrong)."""
    deadline = time.monotonic() + 120
    with psycopg.connect(url, autocommit=True) as conn:
        while not (rows := conn.execute(query).fetchall()):
            assert alive(), f"stopped before {what}"
            assert time.monotonic() < deadline, f"never saw {what}"
            time.sleep(0.01)
    return rows


def parent_then_child(url: str, parent: str, child: str, run_step: Callable[[], None]) -> None:
    """The application writes a ``parent`` row; ``run_step`` is seen waiting for
    ``parent``; the application then writes a ``child`` row, which must go through
    without waiting on the step."""
    failures: list[BaseException] = []

    def step() -> None:
        try:
            run_step()
        except BaseException as exc:
            failures.append(exc)

    with psycopg.connect(url, application_name="app") as app:
        app_pid = app.info.backend_pid
        (key,) = app.execute(f"INSERT INTO {parent} DEFAULT VALUES RETURNING id").fetchone() or ()
        runner = threading.Thread(target=step)
        runner.start()
        until(
            url,
            "SELECT FROM pg_locks WHERE NOT granted AND locktype = 'relation' "
            f"AND relation = '{parent}'::regclass AND pid <> {app_pid}",
            f"the step waiting for {parent}",
            runner.is_alive,
        )
        wrote: list[bool] = []

        def child_row() -> None:
            try:
                app.execute(f"INSERT INTO {child} VALUES (%s)", (key,))
                wrote.append(True)
            except BaseException as exc:
                failures.append(exc)

        writer = threading.Thread(target=child_row)
        writer.start()
        with psycopg.connect(url, autocommit=True) as watch:
            while writer.is_alive():
                (blockers,) = watch.execute(
                    "SELECT pg_blocking_pids(%s)", (app_pid,)
                ).fetchone() or ([],)
                if blockers:
                    # The stall is the finding; end it.
                    watch.execute("SELECT pg_cancel_backend(%s)", (app_pid,))
                    writer.join(60)
                    app.rollback()
                    runner.join(300)
                    pytest.fail(f"the application's {child} write waited on the step {blockers}")
                time.sleep(0.01)
        writer.join()
        app.commit()
    runner.join(300)
    assert not failures, failures
    assert wrote == [True]


def test_retype_of_a_referenced_key_locks_it_before_the_referencing_table(
    fresh_db: str,
) -> None:
    """The retype's incoming-{fk} step (ADD FOREIGN KEY ... NOT VALID: SHARE ROW
    EXCLUSIVE) and its drop-incoming step (DROP CONSTRAINT: ACCESS EXCLUSIVE), run as
    the contract scheduled them, each while the application writes a user, then an
    order for it."""
    url = seeded(fresh_db, SEED)
    plan = parse_plan(
        "release: fk-order\ndatabase: {lock_timeout: 60s, retries: 0}\nexpand:\n"
        "  - alter_column: {table: users, column: id, type: bigint}\n"
        "contract:\n  not_before: 0s\n"
    )
    for verb in (commands.expand, commands.backfill, commands.complete):
        verb(plan, opts(url))
    with psycopg.connect(url, autocommit=True) as conn:
        scheduled = dict(
            conn.execute(
                "SELECT key, statements FROM migrator.contracts WHERE key ~ 'incoming-'"
            ).fetchall()
        )

    def run(key: str) -> Callable[[], None]:
        (found,) = [v for k, v in scheduled.items() if k.endswith(key)]

        def step() -> None:
            with psycopg.connect(url) as conn:
                conn.execute("SET LOCAL lock_timeout = '60s'")
                for statement in found:  # type: ignore[attr-defined]
                    conn.execute(statement["sql"])

        return step

    parent_then_child(url, "users", "orders (user_id)", run(".incoming-orders_user_id_fkey"))
    run(".validate-incoming-orders_user_id_fkey")()
    parent_then_child(url, "users", "orders (user_id)", run(".drop-incoming-orders_user_id_fkey"))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'orders'::regclass AND contype = 'f'"
        ).fetchall() == [
            ("orders_user_id_fkey", "FOREIGN KEY (user_id) REFERENCES users(_migrator_new_id)")
        ]


def test_add_foreign_key_locks_the_referenced_table_first(fresh_db: str) -> None:
    """add_foreign_key's expand (ADD FOREIGN KEY ... NOT VALID) and its rollback (DROP
    CONSTRAINT), each while the application writes a team, then a member of it."""
    plan = parse_plan(
        "release: fk-add\ndatabase: {lock_timeout: 60s, retries: 0}\nexpand:\n"
        "  - add_foreign_key: {table: members, name: members_team_fk, columns: [team_id],\n"
        "                     references: {table: teams, columns: [id]}}\n"
    )
    url = seeded(
        fresh_db,
        "CREATE TABLE teams (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);"
        "CREATE TABLE members (team_id int); INSERT INTO teams DEFAULT VALUES;"
        "INSERT INTO members VALUES (1)",
    )
    parent_then_child(url, "teams", "members (team_id)", lambda: commands.expand(plan, opts(url)))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'members_team_fk'"
        ).fetchall() == [(False,)]
    parent_then_child(url, "teams", "members (team_id)", lambda: commands.rollback(plan, opts(url)))
    with psycopg.connect(url, autocommit=True) as conn:
        assert (
            conn.execute("SELECT FROM pg_constraint WHERE conname = 'members_team_fk'").fetchall()
            == []
        )


def test_dropping_a_key_or_its_column_locks_the_referenced_table_first(fresh_db: str) -> None:
    """add_column's rollback (DROP COLUMN of a column with a foreign key) and
    drop_constraint of a foreign key in a contract, each while the application writes
    a team, then a member of it."""
    url = seeded(
        fresh_db,
        "CREATE TABLE teams (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);"
        "CREATE TABLE members (team_id int CONSTRAINT members_team_fk REFERENCES teams);"
        "INSERT INTO teams DEFAULT VALUES; INSERT INTO members VALUES (1)",
    )
    added = parse_plan(
        "release: fk-column\ndatabase: {lock_timeout: 60s, retries: 0}\nexpand:\n"
        "  - add_column: {table: members, column: {name: lead_id, type: int,\n"
        "                 references: {table: teams, column: id}}}\n"
    )
    commands.expand(added, opts(url))
    parent_then_child(
        url, "teams", "members (team_id)", lambda: commands.rollback(added, opts(url))
    )
    dropped = parse_plan(
        "release: fk-drop\ndatabase: {lock_timeout: 60s, retries: 0}\nexpand: []\n"
        "contract:\n  not_before: 0s\n  operations:\n"
        "    - drop_constraint: {table: members, name: members_team_fk}\n"
    )
    for verb in (commands.expand, commands.backfill, commands.complete):
        verb(dropped, opts(url))
    parent_then_child(url, "teams", "members (team_id)", lambda: commands.contract(opts(url)))
    with psycopg.connect(url, autocommit=True) as conn:
        assert (
            conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'members'::regclass"
            ).fetchall()
            == []
        )
        assert conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'members'::regclass "
            "AND attnum > 0 AND NOT attisdropped"
        ).fetchall() == [("team_id",)]


def never_waits_for(url: str, held: str, write: str, run_step: Callable[[], None]) -> None:
    """The application has written ``held`` (``write``) and not committed; ``run_step``
    must finish without ever waiting for ``held`` in pg_locks."""
    failures: list[BaseException] = []

    def step() -> None:
        try:
            run_step()
        except BaseException as exc:
            failures.append(exc)

    with psycopg.connect(url, application_name="app") as app:
        app.execute(write)  # type: ignore[arg-type]
        runner = threading.Thread(target=step)
        runner.start()
        with psycopg.connect(url, autocommit=True) as watch:
            while runner.is_alive():
                waiting = watch.execute(
                    "SELECT pid FROM pg_locks WHERE NOT granted AND locktype = 'relation' "
                    f"AND relation = '{held}'::regclass"
                ).fetchall()
                if waiting:
                    # The wait is the finding; end it.
                    app.rollback()
                    runner.join(300)
                    pytest.fail(f"the step waited for {held}, which it does not change")
                time.sleep(0.01)
        app.rollback()
    runner.join()
    assert not failures, failures


def test_the_referenced_table_is_locked_without_its_inheritance_children(
    fresh_db: str,
) -> None:
    """LOCK TABLE without ONLY also locks a plain table's inheritance children, which a
    foreign key's ADD and DROP leave alone: add_foreign_key's expand and its rollback
    must not wait for a write to a child table of the one it references."""
    plan = parse_plan(
        "release: fk-only\ndatabase: {lock_timeout: 60s, retries: 0}\nexpand:\n"
        "  - add_foreign_key: {table: members, name: members_team_fk, columns: [team_id],\n"
        "                     references: {table: teams, columns: [id]}}\n"
    )
    url = seeded(
        fresh_db,
        "CREATE TABLE teams (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);"
        "CREATE TABLE old_teams () INHERITS (teams);"
        "CREATE TABLE members (team_id int); INSERT INTO teams DEFAULT VALUES;"
        "INSERT INTO members VALUES (1)",
    )
    write = "INSERT INTO old_teams VALUES (2)"
    never_waits_for(url, "old_teams", write, lambda: commands.expand(plan, opts(url)))
    never_waits_for(url, "old_teams", write, lambda: commands.rollback(plan, opts(url)))
    with psycopg.connect(url, autocommit=True) as conn:
        assert (
            conn.execute("SELECT FROM pg_constraint WHERE conname = 'members_team_fk'").fetchall()
            == []
        )


def scheduled_steps(url: str) -> list[tuple[str, list[dict[str, object]]]]:
    """The contract steps `complete` scheduled, in order: (key, statements)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(  # type: ignore[return-value]
            "SELECT key, statements FROM migrator.contracts ORDER BY position"
        ).fetchall()


def run_statements(url: str, statements: list[dict[str, object]]) -> None:
    """One scheduled step, as the executor runs it: one transaction (autocommit ones
    alone), under a lock_timeout that outlasts the test."""
    with psycopg.connect(url) as conn:
        conn.execute("SET LOCAL lock_timeout = '60s'")
        for statement in statements:
            sql = str(statement["sql"])
            if statement["autocommit"]:
                conn.commit()
                conn.autocommit = True
                conn.execute(sql)  # type: ignore[call-overload]
                conn.autocommit = False
            else:
                conn.execute(sql)  # type: ignore[call-overload]


def test_the_swap_of_a_column_with_a_foreign_key_locks_the_referenced_table_first(
    fresh_db: str,
) -> None:
    """A retype of a referencing column: the swap drops the old column, and its foreign
    key with it (ACCESS EXCLUSIVE on users), after dropping the sync triggers on orders;
    run while the application writes a user, then an order for it."""
    url = seeded(fresh_db, SEED)
    plan = parse_plan(
        "release: fk-swap\ndatabase: {lock_timeout: 60s, retries: 0}\nexpand:\n"
        "  - alter_column: {table: orders, column: user_id, type: bigint}\n"
        "contract:\n  not_before: 0s\n"
    )
    for verb in (commands.expand, commands.backfill, commands.complete):
        verb(plan, opts(url))
    steps = scheduled_steps(url)
    swap = next(i for i, (key, _) in enumerate(steps) if key.endswith(".swap"))
    for _, statements in steps[:swap]:
        run_statements(url, statements)
    parent_then_child(url, "users", "orders (user_id)", lambda: run_statements(url, steps[swap][1]))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT conname, pg_get_constraintdef(oid), format_type(a.atttypid, a.atttypmod) "
            "FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid "
            "AND a.attnum = k.conkey[1] WHERE conrelid = 'orders'::regclass AND contype = 'f'"
        ).fetchall() == [
            ("orders_user_id_fkey", "FOREIGN KEY (user_id) REFERENCES users(id)", "bigint")
        ]


def test_drop_table_locks_the_tables_its_keys_reference_first(fresh_db: str) -> None:
    """drop_table of orders drops its foreign key too (ACCESS EXCLUSIVE on users): run
    in a contract while the application writes a user, then an order for it. Likewise
    create_table's rollback, of a new table with a key: a user, then a note."""
    url = seeded(fresh_db, SEED)
    created = parse_plan(
        "release: fk-create-table\ndatabase: {lock_timeout: 60s, retries: 0}\nexpand:\n"
        "  - create_table:\n      table: notes\n      columns:\n"
        "        - {name: user_id, type: int, references: {table: users, column: id}}\n"
    )
    commands.expand(created, opts(url))
    parent_then_child(
        url, "users", "notes (user_id)", lambda: commands.rollback(created, opts(url))
    )
    plan = parse_plan(
        "release: fk-drop-table\ndatabase: {lock_timeout: 60s, retries: 0}\nexpand: []\n"
        "contract:\n  not_before: 0s\n  operations:\n    - drop_table: {table: orders}\n"
    )
    for verb in (commands.expand, commands.backfill, commands.complete):
        verb(plan, opts(url))
    parent_then_child(url, "users", "orders (user_id)", lambda: commands.contract(opts(url)))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('orders'), to_regclass('notes')").fetchall() == [
            (None, None)
        ]


class StopBefore(Observer):
    """Stops a run as the step ``key`` ends in is about to start (as a kill would)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def step_started(self, step: str, description: str) -> None:
        if step.endswith(self.key):
            raise KeyboardInterrupt(step)


def test_add_column_rollback_after_a_stop_between_partitions_locks_users_first(
    pg15_server: Server,
) -> None:
    """Before 18 a new column's key on a partitioned table is added partition by
    partition; an expand stopped after the first leaf left the key on that leaf alone.
    The rollback's DROP COLUMN takes it with it (ACCESS EXCLUSIVE on users), so it
    locks users first though the table itself has no key: run while the application
    writes a user, then an event."""
    url = pg15_server.create_database("f")
    try:
        seeded(
            url,
            "CREATE TABLE users (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);"
            "CREATE TABLE events (id int, at int DEFAULT 1) PARTITION BY RANGE (at);"
            "CREATE TABLE events_a PARTITION OF events FOR VALUES FROM (0) TO (10);"
            "CREATE TABLE events_b PARTITION OF events FOR VALUES FROM (10) TO (20);"
            "INSERT INTO users DEFAULT VALUES; INSERT INTO events VALUES (1, 1), (2, 15)",
        )
        plan = parse_plan(
            "release: fk-parts\ndatabase: {lock_timeout: 60s, retries: 0}\nexpand:\n"
            "  - add_column: {table: events, column: {name: owner_id, type: int,\n"
            "                 references: {table: users, column: id}}}\n"
        )
        stop = commands.Options(
            database_url=url,
            observer=StopBefore(".foreign-key-events_b"),
            force=True,
            force_reason="test: no old version",
        )
        with pytest.raises(KeyboardInterrupt):
            commands.expand(plan, stop)
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(
                "SELECT conrelid::regclass::text FROM pg_constraint "
                "WHERE conname = 'events_owner_id_fkey'"
            ).fetchall() == [("events_a",)]
        parent_then_child(url, "users", "events (id)", lambda: commands.rollback(plan, opts(url)))
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(
                "SELECT count(*) FROM pg_attribute WHERE attname = 'owner_id'"
            ).fetchall() == [(0,)]
    finally:
        pg15_server.drop_database(url)


def test_drop_column_never_drops_a_foreign_key(fresh_db: str) -> None:
    """drop_column's contract step drops its `down` trigger before the column, so a key
    over the column would be dropped with the referencing table locked first. It cannot
    be: a column with a foreign key is refused, under expand (with down) and at
    complete (under contract, even after a drop_constraint of the key, which runs in the
    same contract), before anything changes; the key goes by drop_constraint, in a
    release of its own, whose step locks the referenced table first (tested above)."""
    url = seeded(
        fresh_db,
        "CREATE TABLE teams (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);"
        "CREATE TABLE members (id int, team_id int CONSTRAINT members_team_fk REFERENCES teams)",
    )
    refusal = "constraint members_team_fk on table members depends on column members.team_id"
    down = parse_plan(
        "release: fk-down\nexpand:\n  - drop_column: {table: members, column: team_id, down: '1'}\n"
    )
    with pytest.raises(ValidationFailed, match=refusal):
        commands.expand(down, opts(url))
    contract = parse_plan(
        "release: fk-contract\nexpand: []\ncontract:\n  not_before: 0s\n  operations:\n"
        "    - drop_constraint: {table: members, name: members_team_fk}\n"
        "    - drop_column: {table: members, column: team_id}\n"
    )
    for verb in (commands.expand, commands.backfill):
        verb(contract, opts(url))
    with pytest.raises(ValidationFailed, match=refusal):
        commands.complete(contract, opts(url))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'members'::regclass"
        ).fetchall() == [("members_team_fk",)]


def test_a_role_with_only_references_on_the_referenced_table_adds_and_drops_keys(
    fresh_db: str,
) -> None:
    """LOCK TABLE in SHARE ROW EXCLUSIVE or ACCESS EXCLUSIVE asks UPDATE, DELETE or
    TRUNCATE of the role, where a foreign key asks only REFERENCES (docs/privileges.md):
    on a table of another role the steps run without taking it first, as PostgreSQL
    orders their locks, rather than fail (add_foreign_key's expand and rollback, and
    create_table's rollback, whose DROP TABLE drops the new table's key)."""
    role = f"fk_owner_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(conn.info.dbname), sql.Identifier(role)
            )
        )
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
        conn.execute("CREATE TABLE users (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY)")
        conn.execute(
            sql.SQL("GRANT SELECT, REFERENCES ON users TO {}").format(sql.Identifier(role))
        )
    info = psycopg.conninfo.conninfo_to_dict(fresh_db)
    info["user"] = role
    url = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (user_id int)")
    keyed = parse_plan(
        "release: fk-refs\nexpand:\n"
        "  - add_foreign_key: {table: orders, name: orders_user_fk, columns: [user_id],\n"
        "                     references: {table: users, columns: [id]}}\n"
        "  - create_table:\n      table: notes\n      columns:\n"
        "        - {name: id, type: int, nullable: false}\n"
        "        - {name: user_id, type: int, references: {table: users, column: id}}\n"
        "      primary_key: [id]\n"
    )
    keys = (
        "SELECT conname FROM pg_constraint WHERE contype = 'f' "
        "AND connamespace = 'public'::regnamespace ORDER BY 1"
    )
    commands.expand(keyed, opts(url))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(keys).fetchall() == [("notes_user_id_fkey",), ("orders_user_fk",)]
    commands.rollback(keyed, opts(url))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(keys).fetchall() == []
        assert conn.execute("SELECT to_regclass('notes')").fetchone() == (None,)
