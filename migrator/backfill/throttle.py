"""Throttling, the way gh-ost does it: read the database's load, decide, obey.

Readings come from the server (`ServerReader`): each replica's replay lag in
pg_stat_replication, as time and as bytes of WAL still to replay, the WAL the
replication slots hold back, the sessions active besides the backfill's own, and the
sessions waiting for a lock that a backfill worker holds. `decide` is a pure function
from a reading, the plan's limits and the previous decision to the next decision:

- ``pause`` while a replica lags more than ``max_replication_lag`` or
  ``max_replication_lag_bytes``, or a slot retains more than ``max_retained_wal``
  (re-checked every monitor interval; the batches wait entirely, as gh-ost does on
  replication lag);
- ``slow`` while active sessions or lock waits exceed their limits: each overloaded
  reading raises the level by one, each clean reading lowers it by one, and the sleep
  before every batch is ``target_batch_time * 2**(level-1)`` (at most
  ``MAX_SLOW_SLEEP``), so a busy database gets more and more room;
- ``go`` once the level is back to zero.

The server's own ``replay_lag`` goes stale when replay stops: it is measured when the
standby reports progress, so a paused standby on an idle primary shows the last value
(or NULL) for ever, and a caught-up one shows its old lag for a while. `LagTracker`
therefore keeps the primary's WAL position over time and reads the time lag as the
age of the oldest WAL a replica has not replayed: it grows while replay is paused and
is zero once the replica has replayed everything.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from migrator.durations import format_duration
from migrator.sizes import describe_size, format_size

Action = Literal["go", "slow", "pause"]

PAUSE_RECHECK = 0.25
MAX_SLOW_SLEEP = 5.0
MAX_LEVEL = 8
# The share of the WAL disk's free space slots may hold when the plan does not say.
DEFAULT_RETAINED_SHARE = 0.10


@dataclass(frozen=True)
class Readings:
    """One look at the server. The replica and slot fields are None without (visible)
    replicas or slots; ``replica`` and ``slot`` name the worst one."""

    replication_lag: float | None = None
    active_sessions: int = 0
    lock_waits: int = 0
    replication_lag_bytes: int | None = None
    replica: str | None = None
    retained_wal: int | None = None
    slot: str | None = None
    # What this role cannot see (pg_stat_replication hides other roles' replicas'
    # positions without pg_read_all_stats), to be said once.
    unreadable: str | None = None


@dataclass(frozen=True)
class Limits:
    """Thresholds from the plan's ``backfill:`` section (None: not checked)."""

    max_replication_lag: float | None = 10.0
    max_active_sessions: int | None = None
    max_lock_waits: int | None = 2
    target_batch_time: float = 0.2
    max_replication_lag_bytes: int | None = None
    max_retained_wal: int | None = None


@dataclass(frozen=True)
class Decision:
    """What the workers do before their next batch."""

    action: Action = "go"
    sleep: float = 0.0
    level: int = 0
    reason: str = ""


GO = Decision()


def _pause_reasons(readings: Readings, limits: Limits) -> list[str]:
    reasons = []
    who = f" ({readings.replica})" if readings.replica else ""
    lag = readings.replication_lag
    if limits.max_replication_lag is not None and lag is not None:
        if lag > limits.max_replication_lag:
            reasons.append(
                f"replica lag {lag:.1f}s > max_replication_lag "
                f"{format_duration(limits.max_replication_lag)}{who}"
            )
    behind = readings.replication_lag_bytes
    if limits.max_replication_lag_bytes is not None and behind is not None:
        if behind > limits.max_replication_lag_bytes:
            reasons.append(
                f"replica lag {describe_size(behind)} of WAL not replayed > "
                f"max_replication_lag_bytes {format_size(limits.max_replication_lag_bytes)}{who}"
            )
    retained = readings.retained_wal
    if limits.max_retained_wal is not None and retained is not None:
        if retained > limits.max_retained_wal:
            reasons.append(
                f"replication slot {readings.slot!r} retains {describe_size(retained)} of WAL "
                f"> max_retained_wal {describe_size(limits.max_retained_wal)}"
            )
    return reasons


def decide(readings: Readings, limits: Limits, previous: Decision = GO) -> Decision:
    """The next decision (see the module docstring). Pure: no I/O, no clock."""
    pauses = _pause_reasons(readings, limits)
    if pauses:
        return Decision("pause", PAUSE_RECHECK, previous.level, "; ".join(pauses))
    reasons = []
    if (
        limits.max_active_sessions is not None
        and readings.active_sessions > limits.max_active_sessions
    ):
        reasons.append(
            f"{readings.active_sessions} active sessions > "
            f"max_active_sessions {limits.max_active_sessions}"
        )
    if limits.max_lock_waits is not None and readings.lock_waits > limits.max_lock_waits:
        reasons.append(
            f"{readings.lock_waits} sessions waiting for the backfill's locks > "
            f"max_lock_waits {limits.max_lock_waits}"
        )
    if reasons:
        level = min(previous.level + 1, MAX_LEVEL)
        reason = "; ".join(reasons)
    else:
        # Back under the limits: relax one step per reading, not all at once, so load
        # that comes in waves does not meet a backfill at full speed every time.
        level = max(previous.level - 1, 0)
        reason = "recovering from load"
    if level == 0:
        return GO
    base = max(limits.target_batch_time, 0.01)
    return Decision("slow", min(base * 2 ** (level - 1), MAX_SLOW_SLEEP), level, reason)


# -- time lag that does not go stale --------------------------------------------------------


def lsn_int(lsn: str) -> int:
    """A WAL position (``16/B374D848``) as a number of bytes."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass
class LagTracker:
    """The primary's WAL position over time, to date the WAL a replica has not replayed.

    `observe` records where the primary's WAL was at a moment; `lag` is then how long
    ago the primary first wrote past a replica's replay position: a lower bound of its
    replay lag (exact to one reading), read from the primary alone, which grows while
    replay is paused whether or not anything is written meanwhile.
    """

    samples: deque[tuple[float, int]] = field(default_factory=deque)
    limit: int = 100_000

    def observe(self, now: float, position: int) -> None:
        if not self.samples or position > self.samples[-1][1]:
            self.samples.append((now, position))
        while len(self.samples) > self.limit:
            self.samples.popleft()

    def lag(self, now: float, replayed: int) -> float:
        """Seconds since the primary first wrote past ``replayed`` (0: caught up)."""
        for at, position in self.samples:
            if position > replayed:
                return max(now - at, 0.0)
        return 0.0

    def forget_before(self, replayed: int) -> None:
        """Drop samples every replica has replayed past, keeping the latest of them."""
        while len(self.samples) > 1 and self.samples[1][1] <= replayed:
            self.samples.popleft()


_READ = """
SELECT
  pg_current_wal_lsn()::text AS lsn,
  (SELECT coalesce(json_agg(json_build_object(
       'name', coalesce(nullif(r.application_name, ''), host(r.client_addr), r.pid::text),
       'lag', extract(epoch FROM r.replay_lag)::float8,
       'replayed', r.replay_lsn::text)), '[]')
     FROM pg_stat_replication r) AS replicas,
  (SELECT json_build_array(s.slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn))
     FROM pg_replication_slots s WHERE s.restart_lsn IS NOT NULL
     ORDER BY s.restart_lsn LIMIT 1) AS slot,
  count(*) FILTER (WHERE state = 'active' AND backend_type = 'client backend'
                   AND pid <> pg_backend_pid() AND pid <> ALL(CAST(:mine AS int[])))
    AS active,
  count(*) FILTER (WHERE CASE WHEN wait_event_type = 'Lock'
                              THEN pg_blocking_pids(pid) && CAST(:mine AS int[])
                              ELSE false END) AS waits
FROM pg_stat_activity
"""


class ServerReader:
    """Reads the server's load for `decide`; one per run (it keeps the `LagTracker`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.tracker = LagTracker()

    def __call__(self, conn: Connection, worker_pids: Sequence[int]) -> Readings:
        row = conn.execute(text(_READ), {"mine": list(worker_pids)}).one()
        conn.commit()
        now = self.clock()
        position = lsn_int(row.lsn)
        self.tracker.observe(now, position)
        worst: tuple[float, int, str] | None = None
        hidden = 0
        oldest = position
        for replica in row.replicas:
            if replica["replayed"] is None:
                hidden += 1
                continue
            replayed = lsn_int(replica["replayed"])
            oldest = min(oldest, replayed)
            behind = max(position - replayed, 0)
            # Caught up: no lag, whatever stale value the server still shows.
            seconds = 0.0
            if behind:
                seconds = max(float(replica["lag"] or 0.0), self.tracker.lag(now, replayed))
            if worst is None or (seconds, behind) > worst[:2]:
                worst = (seconds, behind, str(replica["name"]))
        self.tracker.forget_before(oldest)
        slot, retained = (None, None) if row.slot is None else row.slot
        return Readings(
            replication_lag=None if worst is None else worst[0],
            active_sessions=int(row.active),
            lock_waits=int(row.waits),
            replication_lag_bytes=None if worst is None else worst[1],
            replica=None if worst is None else worst[2],
            retained_wal=None if retained is None else int(retained),
            slot=slot,
            unreadable=(
                f"pg_stat_replication hides the positions of {hidden} replica(s) from this "
                "role, so their lag is not checked (grant it pg_monitor: docs/privileges.md)"
                if hidden
                else None
            ),
        )


def read(conn: Connection, worker_pids: Sequence[int]) -> Readings:
    """One reading without a lag history (the server's replay_lag, and bytes)."""
    return ServerReader()(conn, worker_pids)


# -- how much WAL the slots may hold ----------------------------------------------------------


def wal_free_space(conn: Connection) -> tuple[int, str] | None:
    """Free bytes on the disk that holds the server's WAL, and where that was read;
    None where it cannot be read from here.

    PostgreSQL has no SQL function for free disk space, so this reads the disk itself:
    only when this process runs on the database's host (the data directory's
    postmaster.pid names this very server: its port and start time) and may look into
    the data directory (``data_directory`` needs superuser or pg_read_all_settings).
    ``pg_wal`` is followed where it is a link to another disk.
    """
    try:
        row = conn.execute(
            text(
                "SELECT current_setting('data_directory') AS data, "
                "current_setting('port') AS port, "
                "extract(epoch FROM pg_postmaster_start_time())::float8 AS started"
            )
        ).one()
        conn.commit()
    except DBAPIError:
        conn.rollback()
        return None
    data = Path(row.data)
    try:
        lines = [line.strip() for line in (data / "postmaster.pid").read_text().splitlines()]
        # The file's start time is whole seconds, taken a moment apart from the one SQL
        # shows: the same server within a second, on the same port and folder.
        same = len(lines) > 3 and lines[1] == str(data) and lines[3] == str(row.port)
        if not same or not lines[2].isdigit() or abs(int(lines[2]) - row.started) > 1.5:
            return None
        wal = data / "pg_wal"
        stats = os.statvfs(wal)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize, str(wal)


def retained_wal_limit(conn: Connection, value: int | str | None) -> tuple[int | None, str]:
    """The ``max_retained_wal`` in bytes for the plan's value (a size, a share, "off" or
    None for the default share), and one line saying how it was read."""
    if value == "off":
        return None, "max_retained_wal: off"
    if isinstance(value, int):
        return value, f"max_retained_wal: {format_size(value)}"
    share = DEFAULT_RETAINED_SHARE if value is None else float(value.rstrip("% ")) / 100
    free = wal_free_space(conn)
    if free is None:
        return None, (
            f"max_retained_wal {share * 100:g}% of the WAL disk's free space is not checked: "
            "the free space cannot be read from here (set max_retained_wal to a size)"
        )
    limit = int(free[0] * share)
    return limit, (
        f"max_retained_wal: {describe_size(limit)}, {share * 100:g}% of the "
        f"{describe_size(free[0])} free on the disk of {free[1]}"
    )
