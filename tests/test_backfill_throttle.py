"""Throttling: the pure decisions against stubbed readings, then the whole loop on a
real PostgreSQL with a stubbed replica lag and with a real concurrent workload."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, text

from migrator import commands
from migrator.backfill import throttle
from migrator.backfill.runner import Backfill, settings_from_plan
from migrator.backfill.throttle import Limits, Readings, decide
from migrator.commands.backfill import backfill_specs
from migrator.commands.session import operation_context
from migrator.db.connection import connect, make_engine
from migrator.engine.state import StateStore
from tests.test_backfill import Recorder, make_plan, opts, q, wrong_rows

LIMITS = Limits(
    max_replication_lag=10.0, max_active_sessions=20, max_lock_waits=2, target_batch_time=0.2
)


# -- decisions -----------------------------------------------------------------------------


def test_quiet_server_goes() -> None:
    assert decide(Readings(None, 3, 0), LIMITS) == throttle.GO
    assert decide(Readings(2.0, 20, 2), LIMITS).action == "go"  # at the limits is fine


def test_lagging_replica_pauses_until_it_catches_up() -> None:
    paused = decide(Readings(12.5, 0, 0), LIMITS)
    assert paused.action == "pause"
    assert paused.sleep == throttle.PAUSE_RECHECK
    assert "replica lag 12.5s > max_replication_lag 10s" in paused.reason
    assert decide(Readings(9.0, 0, 0), LIMITS, paused).action == "go"


def test_lag_wins_over_load() -> None:
    assert decide(Readings(11.0, 99, 99), LIMITS).action == "pause"


def test_no_replicas_or_no_lag_limit_never_pauses() -> None:
    assert decide(Readings(None, 0, 0), LIMITS).action == "go"
    unlimited = Limits(max_replication_lag=None)
    assert decide(Readings(3600.0, 0, 0), unlimited).action == "go"


def test_load_slows_down_more_and_more_then_relaxes_step_by_step() -> None:
    busy = Readings(None, 25, 0)
    decisions = [decide(busy, LIMITS)]
    for _ in range(12):
        decisions.append(decide(busy, LIMITS, decisions[-1]))
    sleeps = [d.sleep for d in decisions]
    assert [d.action for d in decisions] == ["slow"] * 13
    assert sleeps[:5] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])
    assert max(sleeps) == throttle.MAX_SLOW_SLEEP
    assert "25 active sessions > max_active_sessions 20" in decisions[0].reason
    calm = Readings(None, 1, 0)
    relaxing = [decide(calm, LIMITS, decisions[-1])]
    while relaxing[-1].action != "go":
        relaxing.append(decide(calm, LIMITS, relaxing[-1]))
    assert len(relaxing) == throttle.MAX_LEVEL
    assert all(a.sleep >= b.sleep for a, b in zip(relaxing, relaxing[1:], strict=False))
    assert relaxing[0].reason == "recovering from load"


def test_lock_waits_caused_by_the_backfill_slow_it_down() -> None:
    slow = decide(Readings(None, 0, 3), LIMITS)
    assert slow.action == "slow"
    assert "3 sessions waiting for the backfill's locks > max_lock_waits 2" in slow.reason
    both = decide(Readings(None, 21, 3), LIMITS)
    assert "active sessions" in both.reason and "waiting" in both.reason


def test_unset_limits_are_not_checked() -> None:
    off = Limits(max_replication_lag=None, max_active_sessions=None, max_lock_waits=None)
    assert decide(Readings(99.0, 999, 999), off) == throttle.GO


def test_plan_keys_reach_the_limits() -> None:
    plan = make_plan(extra=", max_active_sessions: 7, max_lock_waits: 0, max_replication_lag: 3s")
    settings = settings_from_plan(plan, workers=2)
    assert settings.limits == Limits(3.0, 7, 0, 0.05)
    assert settings.workers == 2


# -- the loop, on a real server ---------------------------------------------------------------

SEED = """
CREATE TABLE users (id bigint PRIMARY KEY, legacy_phone text, note int NOT NULL DEFAULT 0);
INSERT INTO users (id, legacy_phone) SELECT g, 'p' || g FROM generate_series(1, {rows}) g;
"""


def prepared(url: str, plan: Any) -> tuple[Any, str, Any]:
    """Expand, record the backfill step as running; return (spec, key, engine)."""
    commands.expand(plan, opts(url))
    engine = make_engine(url)
    with connect(engine) as conn:
        ((key, spec),) = backfill_specs(plan, operation_context(plan, conn))
        StateStore().mark_step(conn, plan.release, "backfill", key, 0, "fill", "running")
        conn.commit()
    return spec, key, engine


def test_a_lagging_replica_pauses_the_batches(fresh_db: str) -> None:
    """Readings stubbed for the lag only (no replica here); the database is real.

    The replica lags for the first four readings, counted rather than timed (a busy
    machine takes fewer readings in a given time): no row is filled meanwhile."""
    q(fresh_db, SEED.format(rows=5000))
    plan = make_plan(batch="500")
    spec, key, engine = prepared(fresh_db, plan)
    filled_while_lagging: list[int] = []

    def reader(conn: Connection, pids: Sequence[int]) -> Readings:
        real = throttle.read(conn, pids)
        if len(filled_while_lagging) < 4:
            filled_while_lagging.append(
                int(conn.execute(text("SELECT count(phone) FROM users")).scalar_one())
            )
            conn.commit()
            return Readings(30.0, real.active_sessions, real.lock_waits)
        return real

    recorder = Recorder()
    outcome = Backfill(
        engine,
        spec,
        release=plan.release,
        key=key,
        settings=settings_from_plan(plan),
        observer=recorder,
        reader=reader,
    ).run()
    engine.dispose()
    assert filled_while_lagging == [0, 0, 0, 0]
    assert any("pausing: replica lag 30.0s" in w for w in recorder.warnings)
    assert outcome.rows == 5000
    assert wrong_rows(fresh_db) == 0


def hammer(url: str, stop: threading.Event, rows: int, done: list[int]) -> None:
    """Single-row updates on random rows, as a busy application does."""
    import random

    rng = random.Random()
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            conn.execute("UPDATE users SET note = note + 1 WHERE id = %s", (rng.randint(1, rows),))
            done.append(1)


def test_lock_waits_from_a_real_workload_slow_the_backfill(fresh_db: str) -> None:
    rows = 3000
    q(fresh_db, SEED.format(rows=rows))
    # Each row takes a millisecond to compute, so a batch holds its row locks long
    # enough for the workload to queue behind it.
    up = "coalesce(legacy_phone, '') || pg_sleep(0.001)::text"
    plan = make_plan(batch="300", up=up, extra=", max_lock_waits: 0")
    commands.expand(plan, opts(fresh_db))
    stop = threading.Event()
    done: list[int] = []
    workers = [threading.Thread(target=hammer, args=(fresh_db, stop, rows, done)) for _ in range(4)]
    for worker in workers:
        worker.start()
    recorder = Recorder()
    try:
        commands.backfill(plan, opts(fresh_db, recorder))
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    slowed = [w for w in recorder.warnings if "waiting for the backfill's locks" in w]
    assert slowed, recorder.warnings
    assert "slowing down" in slowed[0]
    assert len(done) > 100
    assert wrong_rows(fresh_db) == 0
    assert q(fresh_db, "SELECT count(*) FROM users WHERE phone IS NULL")[0][0] == 0


def test_many_active_sessions_slow_the_backfill(fresh_db: str) -> None:
    q(fresh_db, SEED.format(rows=4000))
    plan = make_plan(batch="200", pause="20ms", extra=", max_active_sessions: 2")
    commands.expand(plan, opts(fresh_db))
    stop = threading.Event()

    def busy() -> None:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("SELECT pg_sleep(0.2)")

    sessions = [threading.Thread(target=busy) for _ in range(4)]
    for session in sessions:
        session.start()
    # The load goes away after two seconds; the backfill must then speed up again.
    threading.Timer(2.0, stop.set).start()
    recorder = Recorder()
    started = time.monotonic()
    try:
        commands.backfill(plan, opts(fresh_db, recorder))
    finally:
        stop.set()
        for session in sessions:
            session.join()
    elapsed = time.monotonic() - started
    assert any("active sessions > max_active_sessions 2" in w for w in recorder.warnings)
    assert any("back under the limits" in i for i in recorder.infos)
    assert elapsed > 2.0  # it waited out the load (no upper bound: a busy machine is slow)
    assert wrong_rows(fresh_db) == 0
