"""The backfill against a real streaming standby and a real replication slot.

A primary and its standby run on loopback (`tests.support.standby.Pair`). Pausing replay
on the standby pauses the backfill at the next reading of the monitor; resuming replay
lets it finish, and the standby then holds exactly the primary's rows. A logical slot
that nothing consumes pauses it too, and the pause names the slot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection

from migrator import commands
from migrator.backfill import throttle
from migrator.backfill.runner import MONITOR_INTERVAL, Backfill, Outcome, settings_from_plan
from migrator.backfill.throttle import LagTracker, Readings, ServerReader
from migrator.plan.models import Plan
from tests.support.standby import Pair
from tests.test_backfill import Recorder, make_plan, opts, q, wrong_rows
from tests.test_backfill_throttle import prepared

ROWS = 20_000
SEED = f"""
CREATE TABLE users (id bigint PRIMARY KEY, legacy_phone text);
INSERT INTO users SELECT g, CASE WHEN g % 9 = 0 THEN NULL ELSE 'p' || g END
FROM generate_series(1, {ROWS}) g;
"""
CHECKSUM = "SELECT md5(string_agg(id || ':' || coalesce(phone, '-'), ',' ORDER BY id)) FROM users"
# How long a test waits for an event before it calls it missing (not a pacing timer).
PATIENCE = 180.0


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    started = Pair()
    yield started
    started.stop()


@pytest.fixture
def dbs(pair: Pair, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    name = f"r_{abs(hash(request.node.name)) % 10**8}"
    primary, standby = pair.create_database(name)
    yield primary, standby
    with psycopg.connect(pair.primary_url, autocommit=True) as conn:
        for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)
        ).fetchall():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
        )


class RecordingReader(ServerReader):
    """The real reader, keeping each reading and letting the test wait for more."""

    def __init__(self) -> None:
        super().__init__()
        self.readings: list[Readings] = []
        self.more = threading.Condition()

    def __call__(self, conn: Connection, worker_pids: Sequence[int]) -> Readings:
        readings = super().__call__(conn, worker_pids)
        with self.more:
            self.readings.append(readings)
            self.more.notify_all()
        return readings

    def wait_count(self, count: int) -> None:
        with self.more:
            assert self.more.wait_for(lambda: len(self.readings) >= count, timeout=PATIENCE)


class Watching(Recorder):
    """A Recorder that lets the test wait for a warning or an info line."""

    def __init__(self, reader: RecordingReader | None = None) -> None:
        super().__init__()
        self.changed = threading.Condition()
        self.reader = reader
        # How many readings had been taken when each warning came.
        self.marks: list[int] = []

    def warning(self, message: str) -> None:
        with self.changed:
            super().warning(message)
            self.marks.append(len(self.reader.readings) if self.reader else 0)
            self.changed.notify_all()

    def info(self, message: str) -> None:
        with self.changed:
            super().info(message)
            self.changed.notify_all()

    def wait_for(self, text: str, *, warning: bool = True) -> str:
        with self.changed:
            found = self.changed.wait_for(
                lambda: next((m for m in self._lines(warning) if text in m), None),
                timeout=PATIENCE,
            )
        assert found, f"never said {text!r}: {self.warnings} {self.infos}"
        return str(found)

    def _lines(self, warning: bool) -> list[str]:
        return self.warnings if warning else self.infos


def committed_rows(url: str) -> int:
    return int(q(url, "SELECT coalesce(sum(rows), 0) FROM migrator.backfill_ranges")[0][0])


def wait_until(check: Any, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def run_in_thread(url: str, plan: Plan, reader: RecordingReader, observer: Watching) -> Any:
    """Start the backfill of ``plan`` in a thread; returns (thread, results)."""
    spec, key, engine = prepared(url, plan)
    results: list[Outcome | BaseException] = []

    def run() -> None:
        try:
            results.append(
                Backfill(
                    engine,
                    spec,
                    release=plan.release,
                    key=key,
                    settings=settings_from_plan(plan),
                    observer=observer,
                    reader=reader,
                ).run()
            )
        except BaseException as exc:
            results.append(exc)
        finally:
            engine.dispose()

    thread = threading.Thread(target=run, name="backfill-under-test")
    thread.start()
    return thread, results


def finished(thread: threading.Thread, results: list[Any]) -> Outcome:
    thread.join(PATIENCE)
    assert not thread.is_alive(), "the backfill never finished"
    (outcome,) = results
    if isinstance(outcome, BaseException):
        raise outcome
    assert isinstance(outcome, Outcome)
    return outcome


def same_on_standby(pair: Pair, primary: str, standby: str) -> None:
    pair.wait_replayed()
    assert q(primary, CHECKSUM) == q(standby, CHECKSUM)


def test_paused_replay_pauses_the_backfill_on_the_bytes_behind(
    pair: Pair, dbs: tuple[str, str]
) -> None:
    """Replay paused: the standby still receives WAL but replays none of it, so the bytes
    it has not replayed grow with every batch. The first reading above the limit pauses
    the batches; nothing but the batches then in flight commits until replay resumes."""
    primary, standby = dbs
    q(primary, SEED)
    limit = 256 * 1024
    plan = make_plan(
        batch="200",
        pause="10ms",
        extra=", max_replication_lag: 1h, max_replication_lag_bytes: 256kB",
    )
    reader = RecordingReader()
    observer = Watching(reader)
    thread, results = run_in_thread(primary, plan, reader, observer)
    try:
        wait_until(lambda: committed_rows(primary) > 0, "the first batches")
        pair.pause_replay()
        said = observer.wait_for("pausing: replica lag")
        assert "of WAL not replayed > max_replication_lag_bytes 256kB" in said
        # The pause came with the first reading above the limit: within one monitor
        # interval of the lag crossing it.
        first_over = next(
            i
            for i, r in enumerate(reader.readings)
            if r.replication_lag_bytes is not None and r.replication_lag_bytes > limit
        )
        warned_at = observer.marks[observer.warnings.index(said)]
        assert first_over == warned_at - 1, (first_over, warned_at)
        # The batches in flight then (one worker: one batch) end; then nothing commits
        # while replay is paused, reading after reading.
        reader.wait_count(warned_at + 2)
        held = committed_rows(primary)
        reader.wait_count(warned_at + 10)
        assert committed_rows(primary) == held < ROWS
        assert all(r.replication_lag_bytes > limit for r in reader.readings[warned_at:])  # type: ignore[operator]
    finally:
        pair.resume_replay()
    outcome = finished(thread, results)
    assert any("back under the limits" in i for i in observer.infos)
    assert outcome.rows == ROWS
    assert wrong_rows(primary) == 0
    same_on_standby(pair, primary, standby)


def test_time_lag_keeps_growing_while_replay_is_paused(pair: Pair, dbs: tuple[str, str]) -> None:
    """With only the time limit: the server's replay_lag goes stale once the paused
    backfill stops writing, but the lag read from the primary's WAL history keeps
    growing, so the pause holds until replay resumes and catches up."""
    primary, standby = dbs
    q(primary, SEED)
    plan = make_plan(batch="200", pause="10ms", extra=", max_replication_lag: 1s")
    reader, observer = RecordingReader(), Watching()
    thread, results = run_in_thread(primary, plan, reader, observer)
    try:
        wait_until(lambda: committed_rows(primary) > 0, "the first batches")
        pair.pause_replay()
        said = observer.wait_for("pausing: replica lag")
        assert "> max_replication_lag 1s" in said
        paused_at = len(reader.readings)
        held = committed_rows(primary)
        reader.wait_count(paused_at + 12)  # about 3 s of readings, all paused
        lags = [r.replication_lag for r in reader.readings[paused_at:]]
        assert all(lag is not None and lag > 1.0 for lag in lags), lags
        assert lags == sorted(lags) and lags[-1] - lags[0] >= 5 * MONITOR_INTERVAL
        assert committed_rows(primary) <= held + 200  # at most the batch then in flight
    finally:
        pair.resume_replay()
    outcome = finished(thread, results)
    assert outcome.rows == ROWS and wrong_rows(primary) == 0
    same_on_standby(pair, primary, standby)


def test_a_slot_nothing_consumes_pauses_the_backfill_and_is_named(
    pair: Pair, dbs: tuple[str, str]
) -> None:
    """A logical slot left behind holds WAL on the primary: above max_retained_wal the
    backfill pauses and says which slot; `migrator status` shows it in the checkpoint.
    Dropping the slot lets it finish."""
    primary, standby = dbs
    q(primary, SEED)
    q(primary, "SELECT pg_create_logical_replication_slot('forgotten_slot', 'pgoutput')")
    plan = make_plan(batch="200", extra=", max_retained_wal: 512kB")
    observer = Watching()
    results: list[Any] = []

    def run() -> None:
        try:
            results.append(commands.backfill(plan, opts(primary, observer)))
        except BaseException as exc:
            results.append(exc)

    commands.expand(plan, opts(primary))
    thread = threading.Thread(target=run)
    thread.start()
    try:
        said = observer.wait_for("replication slot 'forgotten_slot' retains")
        assert "> max_retained_wal 512.0kB" in said
        wait_until(
            lambda: "forgotten_slot" in str(status_checkpoint(primary).get("throttle")),
            "the checkpoint to name the slot",
        )
        assert 0 < committed_rows(primary) < ROWS
    finally:
        q(primary, "SELECT pg_drop_replication_slot('forgotten_slot')")
    thread.join(PATIENCE)
    assert not thread.is_alive()
    (result,) = results
    if isinstance(result, BaseException):
        raise result
    assert result.rows == ROWS and wrong_rows(primary) == 0
    same_on_standby(pair, primary, standby)


def status_checkpoint(url: str) -> dict[str, Any]:
    status = commands.status(commands.Options(database_url=url))
    (step,) = [s for s in status.releases[0]["steps"] if s["phase"] == "backfill"]
    return dict(step["checkpoint"] or {})


# -- the WAL limit's default, and the lag history, without a standby ---------------------------


def test_the_default_wal_limit_is_a_tenth_of_the_free_space_read_here(fresh_db: str) -> None:
    """The test server runs on this host, so its WAL disk's free space can be read."""
    from migrator.db.connection import connect, make_engine

    engine = make_engine(fresh_db)
    try:
        with connect(engine) as conn:
            free = throttle.wal_free_space(conn)
            assert free is not None and free[1].endswith("pg_wal")
            limit, how = throttle.retained_wal_limit(conn, None)
            assert limit is not None and abs(limit - free[0] // 10) <= free[0] // 100
            assert "10% of the" in how and "free on the disk of" in how
            assert throttle.retained_wal_limit(conn, "off") == (None, "max_retained_wal: off")
            assert throttle.retained_wal_limit(conn, 1024**3)[0] == 1024**3
            half, _ = throttle.retained_wal_limit(conn, "50%")
            assert half is not None and half > limit
    finally:
        engine.dispose()


def test_where_the_free_space_cannot_be_read_the_default_is_off(fresh_db: str) -> None:
    """A role without pg_read_all_settings cannot see data_directory: not checked, said."""
    from migrator.db.connection import connect, make_engine

    q(fresh_db, "DROP ROLE IF EXISTS plain_reader; CREATE ROLE plain_reader LOGIN")
    url = fresh_db.replace("postgres@", "plain_reader@", 1)
    assert url != fresh_db
    engine = make_engine(url)
    try:
        with connect(engine) as conn:
            assert throttle.wal_free_space(conn) is None
            limit, how = throttle.retained_wal_limit(conn, None)
            assert limit is None and "is not checked" in how and "set max_retained_wal" in how
    finally:
        engine.dispose()
        q(fresh_db, "DROP ROLE plain_reader")


def test_the_lag_history_dates_unreplayed_wal() -> None:
    tracker = LagTracker()
    for second, position in [(0.0, 100), (1.0, 200), (2.0, 200), (3.0, 300)]:
        tracker.observe(second, position)
    assert tracker.lag(3.5, 300) == 0.0  # caught up
    assert tracker.lag(3.5, 250) == 0.5  # WAL past 250 was first seen at 3.0
    assert tracker.lag(3.5, 150) == 2.5
    assert tracker.lag(10.0, 150) == 9.0  # nothing written since: still growing
    tracker.forget_before(200)
    assert tracker.samples[0] == (1.0, 200) and tracker.lag(10.0, 250) == 7.0
