"""A whole release with add_column on a real PostgreSQL: the catalog and the data after
every phase, reruns, dry runs, the lock, lock timeouts, a changed plan."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from migrator import commands
from migrator.db.connection import make_engine
from migrator.engine.lock import AdvisoryLock
from migrator.errors import GateRefused, LockNotAcquired, ValidationFailed
from migrator.observer import Observer
from migrator.plan.loader import parse_plan
from tests.support.functions import calls as function_calls

PLAN = """
release: 2026-11-add-phone
database: {lock_timeout: 200ms, retries: 3}
expand:
  - add_column:
      table: users
      column: {name: phone, type: text}
      up: "coalesce(legacy_phone, 'unknown')"
      final: {nullable: false}
backfill: {batch_size: 100}
"""

SEED = """
CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL, legacy_phone text);
INSERT INTO users (name, legacy_phone)
SELECT 'u' || g, CASE WHEN g % 4 = 0 THEN NULL ELSE 'p' || g END FROM generate_series(1, 1000) g;
"""


class Recorder(Observer):
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.retries: list[tuple[int, float]] = []
        self.skipped: list[str] = []

    def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
        self.statements.append(sql)

    def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
        self.retries.append((attempt, wait))

    def step_skipped(self, step: str, description: str) -> None:
        self.skipped.append(step)


def q(url: str, query: str, *params: object) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []


def catalog(url: str) -> list[tuple]:  # type: ignore[type-arg]
    """What a phase may change: user columns, constraints, triggers, functions."""
    return q(
        url,
        "SELECT 'col', c.relname || '.' || a.attname || ':' || format_type(a.atttypid, a.atttypmod)"
        " || ':' || a.attnotnull FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        " AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind = 'r'"
        " UNION ALL SELECT 'con', conname || ':' || pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE connamespace = 'public'::regnamespace"
        " UNION ALL SELECT 'trg', tgname FROM pg_trigger WHERE NOT tgisinternal"
        " UNION ALL SELECT 'fn', proname FROM pg_proc WHERE pronamespace::regnamespace::text"
        " IN ('public', 'migrator')"
        # the state schema's own function (created with it), not something a phase changes
        " AND proname <> 'release_phase' ORDER BY 1, 2",
    )


@pytest.fixture
def db(fresh_db: str) -> str:
    q(fresh_db, SEED)
    return fresh_db


def opts(url: str, observer: Observer | None = None, **kw: object) -> commands.Options:
    return commands.Options(database_url=url, observer=observer or Observer(), **kw)  # type: ignore[arg-type]


def test_whole_release_catalog_and_data_after_every_phase(db: str) -> None:
    whole_release(db)


def test_whole_release_on_postgresql_15(pg15_server) -> None:  # type: ignore[no-untyped-def]
    """The same release on PostgreSQL 15 (Debian's server; skipped where it is absent)."""
    url = pg15_server.create_database("r15")
    try:
        q(url, SEED)
        assert q(url, "SHOW server_version_num")[0][0].startswith("15")
        whole_release(url)
    finally:
        pg15_server.drop_database(url)


def test_sync_function_runs_only_for_old_version_writes(db: str) -> None:
    """The triggers' WHEN conditions keep PL/pgSQL out of every write that does not need
    it: the backfill's own UPDATE, the new version's writes, and updates of filled rows
    that leave the source column alone. Counted by the server (track_functions)."""
    plan = parse_plan(PLAN)
    commands.expand(plan, opts(db))

    def calls(*statements: str) -> int:
        return function_calls(db, "migrator", "public_users_phone_sync", *statements)

    start = calls()
    # A batch of the backfill (the statement the batcher writes) sets phone itself: no
    # call for any of its 100 rows.
    assert (
        calls(
            "UPDATE public.users SET phone = (coalesce(legacy_phone, 'unknown')) "
            "WHERE (id) > (CAST('100' AS bigint)) AND (id) <= (CAST('200' AS bigint)) "
            "AND ((phone IS NULL) IS TRUE)"
        )
        == start
    )
    assert q(db, "SELECT count(*) FROM users WHERE id BETWEEN 101 AND 200 AND phone IS NULL") == [
        (0,)
    ]
    # On filled rows: the new version writes phone itself; other updates leave
    # legacy_phone alone.
    assert (
        calls(
            "INSERT INTO users (name, legacy_phone, phone) VALUES ('v2', 'x', 'mine')",
            "UPDATE users SET name = name || '!' WHERE id BETWEEN 101 AND 110",
            "UPDATE users SET phone = 'set' WHERE id = 111",
            "UPDATE users SET legacy_phone = 'both', phone = 'both' WHERE id = 112",
        )
        == start
    )
    # The old version's writes call it, once per row.
    assert (
        calls(
            "INSERT INTO users (name, legacy_phone) VALUES ('v1', 'y')",
            "UPDATE users SET legacy_phone = 'changed' WHERE id IN (113, 114)",
        )
        == start + 3
    )
    assert q(db, "SELECT phone FROM users WHERE id IN (113, 114) OR name = 'v1' ORDER BY id") == [
        ("changed",)
    ] * 2 + [("y",)]
    # A row the backfill has not reached is filled by any update, even one that moves
    # its key behind the walk (where the walk would never look again).
    assert calls("UPDATE users SET id = -id WHERE id = 501") == start + 4
    assert q(db, "SELECT phone FROM users WHERE id = -501") == [("p501",)]


def whole_release(db: str) -> None:
    plan = parse_plan(PLAN)
    before = catalog(db)

    commands.expand(plan, opts(db))
    assert q(
        db,
        "SELECT is_nullable FROM information_schema.columns "
        "WHERE table_name = 'users' AND column_name = 'phone'",
    ) == [("YES",)]
    assert q(db, "SELECT count(*) FROM pg_trigger WHERE tgname = '_migrator_phone_sync'") == [(1,)]
    # Existing rows are not touched by the expand.
    assert q(db, "SELECT count(*) FROM users WHERE phone IS NOT NULL") == [(0,)]
    # The old version's INSERT (it knows nothing of phone) gets phone from the trigger...
    q(db, "INSERT INTO users (name, legacy_phone) VALUES ('old', 'p-old')")
    assert q(db, "SELECT phone FROM users WHERE name = 'old'") == [("p-old",)]
    # ...its UPDATE of the source column carries over...
    q(db, "UPDATE users SET legacy_phone = 'p-new' WHERE name = 'old'")
    assert q(db, "SELECT phone FROM users WHERE name = 'old'") == [("p-new",)]
    # ...and a value the new version wrote is kept.
    q(db, "INSERT INTO users (name, legacy_phone, phone) VALUES ('new', 'x', 'chosen')")
    q(db, "UPDATE users SET name = 'new2' WHERE name = 'new'")
    assert q(db, "SELECT phone FROM users WHERE name = 'new2'") == [("chosen",)]
    q(db, "UPDATE users SET phone = 'kept' WHERE id = 5")

    result = commands.backfill(plan, opts(db))
    assert result.rows == 999  # 1000 seeded, one of them (id 5) already written by v2
    assert q(db, "SELECT count(*) FROM users WHERE phone IS NULL") == [(0,)]
    assert q(db, "SELECT phone FROM users WHERE id = 5") == [("kept",)]
    assert q(
        db,
        "SELECT count(*) FROM users WHERE id <> 5 AND id <= 1000 AND "
        "phone IS DISTINCT FROM coalesce(legacy_phone, 'unknown')",
    ) == [(0,)]

    commands.complete(plan, opts(db))
    assert q(db, "SELECT phase FROM migrator.releases") == [("completed",)]
    scheduled = q(db, "SELECT key, status FROM migrator.contracts ORDER BY position")
    assert [k for k, _ in scheduled] == [
        "0.add_column.not-null-check",
        "0.add_column.validate-not-null",
        "0.add_column.set-not-null",
        "0.add_column.drop-sync-trigger",
    ]
    assert {s for _, s in scheduled} == {"scheduled"}

    commands.contract(opts(db))
    assert q(
        db,
        "SELECT is_nullable FROM information_schema.columns "
        "WHERE table_name = 'users' AND column_name = 'phone'",
    ) == [("NO",)]
    assert q(db, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == [(0,)]
    assert q(db, "SELECT count(*) FROM pg_constraint WHERE conname LIKE '_migrator%'") == [(0,)]
    assert q(db, "SELECT phase FROM migrator.releases") == [("contracted",)]
    assert catalog(db) != before
    actions = [a for (a,) in q(db, "SELECT action FROM migrator.events ORDER BY id")]
    # The backfill's progress samples (for `migrator report`) come before its end.
    samples = [n for n, a in enumerate(actions) if a == "backfill.progress"]
    assert samples and max(samples) < actions.index("backfill.done"), actions
    assert [a for a in actions if a != "backfill.progress"] == [
        "expand.start",
        "expand.done",
        "backfill.done",
        "complete",
        "contract.start",
        "contract.done",
    ]


def test_rerun_of_each_phase_changes_nothing(db: str) -> None:
    plan = parse_plan(PLAN)
    for run in (commands.expand, commands.backfill, commands.complete):
        run(plan, opts(db))
        snapshot = catalog(db), q(db, "SELECT id, phone FROM users ORDER BY id")
        rec = Recorder()
        again = run(plan, opts(db, rec))
        assert again.ran == []
        assert rec.statements == []
        assert (catalog(db), q(db, "SELECT id, phone FROM users ORDER BY id")) == snapshot
    commands.contract(opts(db))
    snapshot = catalog(db)
    rec = Recorder()
    assert commands.contract(opts(db, rec)) == []
    assert rec.statements == []
    assert catalog(db) == snapshot


def test_events_sequence_gone_back_does_not_stop_a_command(db: str) -> None:
    """After a crash a database copied from a template can find migrator.events' sequence
    behind the ids it handed out; the next commands still run and log every event."""
    plan = parse_plan(PLAN)
    commands.expand(plan, opts(db))
    logged = q(db, "SELECT count(*), max(id) FROM migrator.events")[0]
    assert logged[0] >= 2
    q(db, "SELECT setval(pg_get_serial_sequence('migrator.events', 'id'), 1, false)")
    commands.backfill(plan, opts(db))
    commands.complete(plan, opts(db))
    actions = [a for (a,) in q(db, "SELECT action FROM migrator.events ORDER BY id")]
    assert actions[: logged[0]] == ["expand.start", "expand.done"]
    assert "backfill.done" in actions[logged[0] :] and "complete" in actions[logged[0] :]
    assert q(
        db, "SELECT min(id) > %s FROM migrator.events WHERE action = 'complete'", logged[1]
    ) == [(True,)]
    assert q(db, "SELECT phase FROM migrator.releases") == [("completed",)]


def test_expand_resumes_after_a_failed_step(db: str) -> None:
    """A step that fails is redone on the rerun; the steps before it are skipped."""
    plan = parse_plan(PLAN)
    # Make the trigger step fail: a function of that name with another return type.
    q(
        db,
        "CREATE SCHEMA migrator; CREATE FUNCTION migrator.public_users_phone_sync() "
        "RETURNS int LANGUAGE sql AS 'SELECT 1'",
    )
    with pytest.raises(Exception, match="sync-trigger"):
        commands.expand(plan, opts(db))
    steps = q(db, "SELECT key, status FROM migrator.steps ORDER BY position")
    assert steps == [("0.add_column.add-column", "done"), ("0.add_column.sync-trigger", "failed")]
    q(db, "DROP FUNCTION migrator.public_users_phone_sync()")
    rec = Recorder()
    result = commands.expand(plan, opts(db, rec))
    assert result.skipped == ["0.add_column.add-column"]
    assert result.ran == ["0.add_column.sync-trigger"]


def test_dry_run_leaves_catalog_untouched(db: str) -> None:
    plan = parse_plan(PLAN)
    before = catalog(db)
    rec = Recorder()
    commands.expand(plan, opts(db, rec, dry_run=True))
    assert any("ADD COLUMN phone text" in s for s in rec.statements)
    assert any("CREATE TRIGGER" in s for s in rec.statements)
    assert catalog(db) == before
    assert q(db, "SELECT to_regnamespace('migrator')") == [(None,)]


def test_complete_dry_run_shows_the_contract_sql_and_schedules_nothing(db: str) -> None:
    plan = parse_plan(PLAN)
    commands.expand(plan, opts(db))
    commands.backfill(plan, opts(db))
    rec = Recorder()
    commands.complete(plan, opts(db, rec, dry_run=True))
    assert any("VALIDATE CONSTRAINT" in s for s in rec.statements), rec.statements
    assert any("SET NOT NULL" in s for s in rec.statements), rec.statements
    assert any("DROP TRIGGER" in s for s in rec.statements), rec.statements
    assert q(db, "SELECT count(*) FROM migrator.contracts") == [(0,)]
    assert q(db, "SELECT phase FROM migrator.releases") == [("backfilled",)]


def test_validation_refuses_and_changes_nothing(db: str) -> None:
    before = catalog(db)
    for text, message in [
        (PLAN.replace("table: users", "table: nobody"), "table public.nobody does not exist"),
        (PLAN.replace("name: phone", "name: legacy_phone"), "already exists"),
        (PLAN.replace("type: text", "type: texte"), "unknown type 'texte'"),
        (PLAN.replace("legacy_phone,", "legacy_phon,"), "does not work on the table"),
    ]:
        with pytest.raises(ValidationFailed, match=message) as caught:
            commands.expand(parse_plan(text), opts(db))
        assert caught.value.exit_code == 2
        assert catalog(db) == before
    assert q(db, "SELECT count(*) FROM migrator.releases") == [(0,)]


def test_second_migrator_gets_exit_5_naming_the_holder(db: str) -> None:
    engine = make_engine(db)
    try:
        with AdvisoryLock(engine, "migrator expand other-release"):
            with pytest.raises(LockNotAcquired) as caught:
                commands.expand(parse_plan(PLAN), opts(db))
        assert caught.value.exit_code == 5
        assert "migrator expand other-release" in str(caught.value)
    finally:
        engine.dispose()


def test_second_migrator_process_exits_5(db: str, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    engine = make_engine(db)
    try:
        with AdvisoryLock(engine, "migrator backfill 2026-11-add-phone"):
            proc = subprocess.run(
                [sys.executable, "-m", "migrator", "expand", str(plan), "--database-url", db],
                capture_output=True,
                text=True,
                timeout=60,
            )
    finally:
        engine.dispose()
    assert proc.returncode == 5, proc.stderr
    assert "another migrator is running" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_lock_timeout_is_retried_with_backoff(db: str) -> None:
    """A long transaction holds a lock; expand waits, retries, and gets through once the
    transaction ends (here: right after the first retry is announced)."""
    blocker = psycopg.connect(db)
    blocker.execute("LOCK TABLE users IN ACCESS SHARE MODE")

    class ReleaseOnRetry(Recorder):
        def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
            super().retry(step, attempt, wait, reason)
            assert "lock timeout" in reason
            if attempt == 2:
                blocker.rollback()

    rec = ReleaseOnRetry()
    try:
        commands.expand(parse_plan(PLAN.replace("retries: 3", "retries: 8")), opts(db, rec))
    finally:
        blocker.close()
    assert [a for a, _ in rec.retries] == [1, 2]
    first, second = (w for _, w in rec.retries)
    assert 0 < first and 0 < second  # backoff with jitter: each wait is positive
    assert q(db, "SELECT count(*) FROM migrator.steps WHERE status = 'done'") == [(2,)]


def test_lock_not_acquired_after_retries_exits_5(db: str) -> None:
    blocker = psycopg.connect(db)
    blocker.execute("LOCK TABLE users IN ACCESS SHARE MODE")
    try:
        rec = Recorder()
        with pytest.raises(LockNotAcquired, match="lock_timeout 200ms after 1 retries"):
            commands.expand(parse_plan(PLAN.replace("retries: 3", "retries: 1")), opts(db, rec))
        assert len(rec.retries) == 1
    finally:
        blocker.close()
    assert q(
        db,
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_name = 'users' AND column_name = 'phone'",
    ) == [(0,)]


def test_changed_plan_is_refused_unless_accepted(db: str) -> None:
    commands.expand(parse_plan(PLAN), opts(db))
    changed = parse_plan(PLAN.replace("batch_size: 100", "batch_size: 50"))
    with pytest.raises(GateRefused, match="changed since it started") as caught:
        commands.backfill(changed, opts(db))
    assert caught.value.exit_code == 3
    commands.backfill(changed, opts(db, accept_changed_plan=True))
    assert q(db, "SELECT plan_hash FROM migrator.releases") == [(changed.digest(),)]


def test_rollback_before_switch_restores_the_catalog(db: str) -> None:
    plan = parse_plan(PLAN)
    before = catalog(db)
    commands.expand(plan, opts(db))
    commands.rollback(plan, opts(db))
    assert catalog(db) == before
    assert q(db, "SELECT phase FROM migrator.releases") == [("rolled_back",)]
    # The release can be expanded again after a rollback.
    commands.expand(plan, opts(db))
    assert q(db, "SELECT phase FROM migrator.releases") == [("expanded",)]


def test_one_release_in_flight_and_linear_history(db: str) -> None:
    commands.expand(parse_plan(PLAN), opts(db))
    other = parse_plan(PLAN.replace("2026-11-add-phone", "other").replace("phone", "fax"))
    with pytest.raises(GateRefused, match="still in flight"):
        commands.expand(other, opts(db))
    # The database itself refuses a second release in flight.
    with pytest.raises(psycopg.errors.UniqueViolation):
        q(
            db,
            "INSERT INTO migrator.releases (name, after, plan, plan_hash, phase) "
            "VALUES ('x', '2026-11-add-phone', '{}', 'h', 'expanding')",
        )


def test_contract_waits_for_not_before(db: str) -> None:
    plan = parse_plan(PLAN + "contract: {not_before: 24h, operations: []}\n")
    commands.expand(plan, opts(db))
    commands.backfill(plan, opts(db))
    commands.complete(plan, opts(db))
    with pytest.raises(GateRefused, match="not_before") as caught:
        commands.contract(opts(db))
    assert caught.value.exit_code == 3
    commands.contract(opts(db, force=True, force_reason="test"))
    assert q(db, "SELECT phase FROM migrator.releases") == [("contracted",)]


def test_status_json(db: str) -> None:
    plan = parse_plan(PLAN)
    commands.expand(plan, opts(db))
    status = commands.status(opts(db)).to_json()
    assert status["initialised"] is True
    (release,) = status["releases"]
    assert release["phase"] == "expanded"
    assert [s["status"] for s in release["steps"]] == ["done", "done"]


def test_password_never_in_output(pg_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    url = "postgresql://someone:s3cretpw@127.0.0.1:1/nowhere"
    for args in (["expand", str(plan)], ["status"], ["init"]):
        proc = subprocess.run(
            [sys.executable, "-m", "migrator", *args, "--database-url", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 4, proc.stderr
        assert "s3cretpw" not in proc.stdout + proc.stderr
        assert "cannot connect to postgresql://someone:***@127.0.0.1:1/nowhere" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_release_end_to_end(db: str, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    for args in (
        ["expand", str(plan)],
        ["backfill", str(plan)],
        ["complete", str(plan)],
        ["contract"],
        ["status"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "migrator", *args, "--database-url", db],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
    assert "contracted" in proc.stdout
    started = time.monotonic()
    assert time.monotonic() - started < 60


def test_index_and_foreign_key_on_a_column_added_earlier_in_the_plan(db: str) -> None:
    """The plan-format example (docs/plan-format.md): add a column, then index it and reference it, in one plan."""
    q(db, "CREATE TABLE teams (id int PRIMARY KEY); INSERT INTO teams VALUES (1)")
    plan = parse_plan(
        PLAN.replace("backfill: {batch_size: 100}\n", "")
        + """  - create_index: {table: users, name: users_phone_idx, columns: [phone]}
  - add_column:
      table: users
      column: {name: team_id, type: int}
  - add_foreign_key:
      table: users
      name: users_team_fk
      columns: [team_id]
      references: {table: teams, columns: [id]}
"""
    )
    commands.expand(plan, opts(db))
    assert q(
        db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_phone_idx'::regclass"
    ) == [(True,)]
    assert q(db, "SELECT convalidated FROM pg_constraint WHERE conname = 'users_team_fk'") == [
        (False,)
    ]


def test_a_contract_with_nothing_to_do_ends_the_release(db: str) -> None:
    plan = parse_plan(
        PLAN.replace("      final: {nullable: false}\n", "").replace(
            "      up: \"coalesce(legacy_phone, 'unknown')\"\n", ""
        )
    )
    for run in (commands.expand, commands.backfill, commands.complete):
        run(plan, opts(db))
    assert q(db, "SELECT count(*) FROM migrator.contracts") == [(0,)]
    (result,) = commands.contract(opts(db))
    assert result.ran == []
    assert q(db, "SELECT phase FROM migrator.releases") == [("contracted",)]
    assert commands.contract(opts(db)) == []


def test_contract_stopped_after_its_last_step_is_finished_by_a_rerun(db: str) -> None:
    """Killed between the last contract step and the phase change: the rerun ends it."""
    plan = parse_plan(PLAN)
    for run in (commands.expand, commands.backfill, commands.complete):
        run(plan, opts(db))
    commands.contract(opts(db))
    # What a kill at that moment leaves: every step done, the release still contracting.
    q(db, "UPDATE migrator.releases SET phase = 'contracting'")
    (result,) = commands.contract(opts(db))
    assert result.ran == []
    assert q(db, "SELECT phase FROM migrator.releases") == [("contracted",)]


def test_contract_before_complete_says_to_run_complete(db: str, tmp_path: Path) -> None:
    """A first user ran `contract` right after the backfill and was told "nothing to
    contract": it names the release, its phase and the command to run, changing nothing."""
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(PLAN)
    plan = parse_plan(PLAN)
    commands.expand(plan, opts(db))
    commands.backfill(plan, opts(db))
    snapshot = catalog(db)
    for name in (None, plan.release):
        with pytest.raises(GateRefused, match="run `migrator complete PLAN` first") as caught:
            commands.contract(opts(db), name)
        assert f"cannot contract {plan.release}: it is backfilled, not completed" in str(
            caught.value
        )
        assert caught.value.exit_code == 3
    proc = subprocess.run(
        [sys.executable, "-m", "migrator", "contract", "--database-url", db],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    assert "nothing to contract" not in proc.stdout
    assert "migrator complete PLAN" in proc.stderr
    assert catalog(db) == snapshot
    assert q(db, "SELECT phase FROM migrator.releases") == [("backfilled",)]
    # Once completed, the same command runs the contract.
    commands.complete(plan, opts(db))
    (result,) = commands.contract(opts(db))
    assert q(db, "SELECT phase FROM migrator.releases") == [("contracted",)]
