"""kill -9 the `migrator backfill` CLI at random moments, resume, and check every row;
`migrator status` in another terminal shows the running backfill's progress."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from migrator import commands
from migrator.backfill import throttle
from migrator.backfill.runner import HOT_PASSES, Backfill, Settings
from migrator.db.connection import make_engine
from migrator.engine.state import StateStore
from migrator.engine.steps import BackfillSpec
from migrator.plan.loader import parse_plan
from tests.test_backfill import checkpoint, opts, plan_text, q

# Each kill's run fills a few hundred rows (its start-up, then at most 0.4 s): 20,000
# rows (18 ranges of ~1,000, each walked in three passes) leave most for the last run.
ROWS = 20_000
BATCH = 100
SEED = f"""
CREATE TABLE users (tenant int, id int, legacy_phone text, PRIMARY KEY (tenant, id));
INSERT INTO users SELECT g % 3, g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'p' || g END
FROM generate_series(1, {ROWS}) g;
"""


STATE = StateStore()


def expected(url: str) -> list[tuple[int, int, str]]:
    """What every row must hold, computed here rather than by the database."""
    out = []
    for tenant, ident, legacy, v2 in q(
        url, "SELECT tenant, id, legacy_phone, id % 17 = 0 FROM users ORDER BY tenant, id"
    ):
        out.append((tenant, ident, "v2" if v2 else (legacy if legacy is not None else "")))
    return out


def filled(url: str) -> int:
    return int(q(url, "SELECT count(*) FROM users WHERE phone IS NOT NULL")[0][0])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "migrator", *args]


def test_kill_9_at_random_points_then_resume_exactly(fresh_db: str, tmp_path: Path) -> None:
    q(fresh_db, SEED)
    text = plan_text(batch=str(BATCH), pause="20ms")
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    commands.expand(parse_plan(text, str(path)), opts(fresh_db))
    # Values the new version wrote before the backfill: they must survive every kill.
    q(fresh_db, "UPDATE users SET phone = 'v2' WHERE id % 17 = 0")
    want = expected(fresh_db)
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    history = [filled(fresh_db)]
    for kill in range(6):
        workers = rng.choice(["1", "2"])
        proc = subprocess.Popen(
            cli("backfill", str(path), "--database-url", fresh_db, "--json", "--workers", workers),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Wait until this run is filling rows, then kill it at a random moment.
        deadline = time.monotonic() + 60
        while filled(fresh_db) <= history[-1] and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"run {kill} ended before the kill (seed {seed})"
        history.append(filled(fresh_db))
        step = q(fresh_db, "SELECT status FROM migrator.steps WHERE phase = 'backfill'")
        assert step == [("running",)], f"seed {seed}"
    assert history == sorted(history), f"progress was lost between kills: {history}"
    assert history[-1] < ROWS, "the kills came too late to interrupt anything"

    # The last run goes to the end, `migrator status` asked while it runs: a row held
    # here (one still to fill) keeps it from ending before then (its batch there waits).
    before = checkpoint(fresh_db)
    holder = psycopg.connect(fresh_db)
    holder.execute("SELECT FROM users WHERE phone IS NULL LIMIT 1 FOR UPDATE")
    done = subprocess.Popen(
        cli("backfill", str(path), "--database-url", fresh_db, "--json", "--workers", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _status_shows_progress(fresh_db, before), "`migrator status` showed no rate"
    finally:
        holder.close()
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    got = q(fresh_db, "SELECT tenant, id, phone FROM users ORDER BY tenant, id")
    assert got == want, f"rows differ after kill -9 and resume (seed {seed})"
    # Resuming never walked the table again from the start: committed batches add up
    # to about one walk of each range's passes (each kill loses only its batches in
    # flight; a pass's last batch in a range may be short).
    passes = checkpoint(fresh_db)["passes"]
    assert passes == HOT_PASSES
    batches = q(fresh_db, "SELECT sum(batches), count(*) FROM migrator.backfill_ranges")[0]
    assert batches[0] <= passes * (ROWS // BATCH + 2 * batches[1]), batches
    assert q(fresh_db, "SELECT DISTINCT pass FROM migrator.backfill_ranges") == [(2,)]
    cp = checkpoint(fresh_db)
    assert cp["rows"] == ROWS - ROWS // 17 == cp["total"]


def _status_shows_progress(url: str, before: dict[str, object]) -> bool:
    """Ask `migrator status` (another process, as in another terminal) while it runs,
    once the run has a rate of its own (``before``: the checkpoint earlier runs left)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cp = checkpoint(url)
        if cp != before and cp.get("rate"):
            break
        time.sleep(0.05)
    else:
        return False
    wide = {**os.environ, "COLUMNS": "250"}
    shown = subprocess.run(
        cli("status", "--database-url", url), capture_output=True, text=True, timeout=60, env=wide
    )
    assert shown.returncode == 0, shown.stderr
    assert "rows/s" in shown.stdout and f"of ~{cp['total']}" in shown.stdout, shown.stdout
    as_json = subprocess.run(
        cli("status", "--database-url", url, "--json"), capture_output=True, text=True, timeout=60
    )
    assert '"rate"' in as_json.stdout and '"updated_at"' in as_json.stdout
    return True


def test_a_stop_signal_ends_the_batches_under_way_exits_5_and_resumes(
    fresh_db: str, tmp_path: Path
) -> None:
    """SIGTERM is what a Kubernetes Job's pod gets when it is deleted, SIGINT is Ctrl-C:
    either way the run stops cleanly and says so. One run is stopped by each, the
    second resuming the first, then a third ends the backfill."""
    rows = 10_000  # the last run walks most of it, at 20 ms a batch
    q(fresh_db, SEED.replace(f"generate_series(1, {ROWS})", f"generate_series(1, {rows})"))
    text = plan_text(batch=str(BATCH), pause="20ms")
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    commands.expand(parse_plan(text, str(path)), opts(fresh_db))
    q(fresh_db, "UPDATE users SET phone = 'v2' WHERE id % 17 = 0")  # the new version's
    want = expected(fresh_db)
    by_v2 = len([r for r in want if r[1] % 17 == 0])
    before = filled(fresh_db)
    for stop in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen(
            cli("backfill", str(path), "--database-url", fresh_db, "--workers", "2"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while filled(fresh_db) <= before and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 5, (stop.name, err)
        assert "interrupted; run the same command again to resume" in err
        assert before < filled(fresh_db) < rows, stop.name
        before = filled(fresh_db)
        # `migrator status` shows the rows actually filled: the checkpoint was written on
        # the way out, once every batch under way had ended.
        shown = subprocess.run(
            cli("status", "--database-url", fresh_db, "--json"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        (step,) = [
            st
            for st in json.loads(shown.stdout)["releases"][0]["steps"]
            if st["phase"] == "backfill"
        ]
        assert step["status"] == "running"
        assert step["checkpoint"]["rows"] == before - by_v2, (stop.name, step["checkpoint"])
        # No session of the stopped run is left behind, holding rows or the lock.
        assert q(
            fresh_db,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'migrator%' "
            "AND pid <> pg_backend_pid()",
        ) == [(0,)], stop.name
    done = subprocess.run(
        cli("backfill", str(path), "--database-url", fresh_db, "--workers", "2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert q(fresh_db, "SELECT tenant, id, phone FROM users ORDER BY tenant, id") == want


def _main_waits_in_threading() -> bool:
    """Whether the main thread is blocked in one of threading's waits (a join, an
    Event's or a Condition's wait): where it spends most of a run, the workers going."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    return frame is not None and frame.f_code.co_filename == threading.__file__


def test_a_stop_landing_while_the_run_waits_for_its_workers_waits_for_their_batch(
    module_db: str,
) -> None:
    """Ctrl-C lands while the run waits for its workers, one of them in a batch (held
    here on a row lock): the run stops only once that batch has ended, and its last
    checkpoint counts it. Before Python 3.13 a KeyboardInterrupt inside Thread.join
    marks the thread as ended while it still runs, so the run wrote its checkpoint
    before the batch committed (seen under load: `migrator status` a batch short)."""
    assert threading.current_thread() is threading.main_thread()
    q(
        module_db,
        "CREATE TABLE held (id int PRIMARY KEY, legacy_phone text, phone text);"
        "INSERT INTO held SELECT g, 'p' || g, NULL FROM generate_series(1, 3000) g",
    )
    release, key = "held", "0.add_column.backfill"
    engine = make_engine(module_db)
    with engine.connect() as conn:
        STATE.init(conn)
        STATE.start_release(conn, release, None, {}, "digest")
        STATE.mark_step(conn, release, "backfill", key, 0, "fill held.phone", "running")
        conn.commit()
    spec = BackfillSpec(
        key="backfill",
        schema="public",
        table="held",
        set={"phone": "coalesce(legacy_phone, '')"},
        needs='"phone" IS NULL',
    )
    run = Backfill(
        engine,
        spec,
        release=release,
        key=key,
        # The batch waits for the row lock as long as the test holds it: no retry.
        settings=Settings(batch_size=100, lock_timeout=120.0, workers=1),
        reader=lambda conn, pids: throttle.Readings(),
    )
    blocker = psycopg.connect(module_db)
    blocker.execute("SELECT FROM held WHERE id = 1500 FOR UPDATE")
    run_over = threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    def interrupt() -> None:
        # A batch waits on the row lock...
        while not q(
            module_db,
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'migrator backfill' "
            "AND wait_event_type = 'Lock'",
        ):
            time.sleep(0.01)
        # ... and the run waits for the workers: Ctrl-C now.
        while not _main_waits_in_threading():
            time.sleep(0.001)
        signal.pthread_kill(main, signal.SIGINT)
        run._shared.stop.wait()  # the run took the interrupt
        # Let the batch go once the run waits for it, or has ended without it.
        while not (run_over.is_set() or _main_waits_in_threading()):
            time.sleep(0.001)
        blocker.rollback()

    helper = threading.Thread(target=interrupt, daemon=True)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        helper.start()
        with pytest.raises(KeyboardInterrupt):
            run.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        run_over.set()
        helper.join()
        blocker.close()
        engine.dispose()
    # Wait for the run's sessions to be gone (at once when the run waited for them).
    while q(
        module_db, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'migrator backfill'"
    ):
        time.sleep(0.01)
    rows = int(q(module_db, "SELECT count(*) FROM held WHERE phone IS NOT NULL")[0][0])
    saved = q(
        module_db,
        "SELECT checkpoint FROM migrator.steps WHERE release = %s AND key = %s",
        release,
        key,
    )[0][0]
    assert 0 < rows < 3000
    assert saved["rows"] == rows, saved


def test_partitions_of_one_name_in_two_schemas_are_two_steps_each_filled(
    fresh_db: str, tmp_path: Path
) -> None:
    """A partitioned table's leaves are walked as steps of their own, each with its
    ranges under its step's key. Two leaves named alike in two schemas had one key: the
    second found the first's ranges done and filled nothing, and a rerun would have
    skipped it as done."""
    q(
        fresh_db,
        "CREATE SCHEMA other;"
        "CREATE TABLE events (id int, legacy_phone text, PRIMARY KEY (id)) PARTITION BY RANGE (id);"
        "CREATE TABLE public.part PARTITION OF events FOR VALUES FROM (0) TO (100);"
        "CREATE TABLE other.part PARTITION OF events FOR VALUES FROM (100) TO (200);"
        "INSERT INTO events SELECT g, 'p' || g FROM generate_series(0, 199) g",
    )
    text = plan_text("events", release="leaves")
    path = tmp_path / "leaves.yaml"
    path.write_text(text)
    plan = parse_plan(text, str(path))
    commands.expand(plan, opts(fresh_db))
    commands.backfill(plan, opts(fresh_db))
    unfilled = q(
        fresh_db,
        "SELECT tableoid::regclass::text, count(*) FROM events WHERE phone IS NULL GROUP BY 1",
    )
    assert unfilled == []
    keys = q(
        fresh_db,
        "SELECT key, status FROM migrator.steps WHERE release = 'leaves' AND phase = 'backfill' "
        "AND key LIKE '%/%' ORDER BY key",
    )
    assert keys == [
        ("0.add_column.backfill/other.part", "done"),
        ("0.add_column.backfill/part", "done"),
    ]
    # A rerun finds both done.
    again = commands.backfill(plan, opts(fresh_db))
    assert again.rows == 0


def test_a_leaf_in_another_schema_keeps_its_bare_key_where_no_other_leaf_has_its_name(
    fresh_db: str, tmp_path: Path
) -> None:
    """Only a leaf whose name another leaf has too is keyed with its schema: every other
    keeps the key a release started before recorded it under, so a rerun finds it done
    (an update without `where:` walked again would add 1 twice)."""
    q(
        fresh_db,
        "CREATE SCHEMA other;"
        "CREATE TABLE tally (id int, n int NOT NULL DEFAULT 1, PRIMARY KEY (id))"
        " PARTITION BY RANGE (id);"
        "CREATE TABLE public.b PARTITION OF tally FOR VALUES FROM (0) TO (100);"
        "CREATE TABLE other.a PARTITION OF tally FOR VALUES FROM (100) TO (200);"
        "INSERT INTO tally (id) SELECT g FROM generate_series(0, 199) g",
    )
    text = (
        "release: legacy-keys\nexpand:\n  - sql: {expand: SELECT 1, rollback: SELECT 1}\n"
        "backfill:\n  updates:\n    - table: tally\n      set: {n: n + 1}\n"
    )
    path = tmp_path / "legacy.yaml"
    path.write_text(text)
    plan = parse_plan(text, str(path))
    commands.expand(plan, opts(fresh_db))
    commands.backfill(plan, opts(fresh_db))
    assert q(fresh_db, "SELECT DISTINCT n FROM tally") == [(2,)]
    keys = q(
        fresh_db,
        "SELECT key FROM migrator.steps WHERE release = 'legacy-keys' AND phase = 'backfill' "
        "AND key LIKE '%/%' ORDER BY key",
    )
    parent = keys[0][0].split("/")[0]
    assert keys == [(f"{parent}/a",), (f"{parent}/b",)]
    # A run stopped before public.b was done: the rerun finds other.a done.
    q(
        fresh_db,
        "UPDATE migrator.steps SET status = 'failed' WHERE release = 'legacy-keys' "
        f"AND key IN ('{parent}', '{parent}/b')",
    )
    commands.backfill(plan, opts(fresh_db))
    assert q(fresh_db, "SELECT DISTINCT n FROM other.a") == [(2,)]
