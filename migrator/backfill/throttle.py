"""Throttling, the way gh-ost does it: read the database's load, decide, obey.

Readings come from the server (`read`): the worst replica replay lag in
pg_stat_replication, the sessions active besides the backfill's own, and the sessions
waiting for a lock that a backfill worker holds. `decide` is a pure function from a
reading, the plan's limits and the previous decision to the next decision:

- ``pause`` while a replica lags more than ``max_replication_lag`` (re-checked every
  second; the batches wait entirely, as gh-ost does on replication lag);
- ``slow`` while active sessions or lock waits exceed their limits: each overloaded
  reading raises the level by one, each clean reading lowers it by one, and the sleep
  before every batch is ``target_batch_time * 2**(level-1)`` (at most
  ``MAX_SLOW_SLEEP``), so a busy database gets more and more room;
- ``go`` once the level is back to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, text

Action = Literal["go", "slow", "pause"]

PAUSE_RECHECK = 1.0
MAX_SLOW_SLEEP = 5.0
MAX_LEVEL = 8


@dataclass(frozen=True)
class Readings:
    """One look at the server. ``replication_lag`` is None without (visible) replicas."""

    replication_lag: float | None = None
    active_sessions: int = 0
    lock_waits: int = 0


@dataclass(frozen=True)
class Limits:
    """Thresholds from the plan's ``backfill:`` section (None: not checked)."""

    max_replication_lag: float | None = 10.0
    max_active_sessions: int | None = None
    max_lock_waits: int | None = 2
    target_batch_time: float = 0.2


@dataclass(frozen=True)
class Decision:
    """What the workers do before their next batch."""

    action: Action = "go"
    sleep: float = 0.0
    level: int = 0
    reason: str = ""


GO = Decision()


def decide(readings: Readings, limits: Limits, previous: Decision = GO) -> Decision:
    """The next decision (see the module docstring). Pure: no I/O, no clock."""
    lag = readings.replication_lag
    if limits.max_replication_lag is not None and lag is not None:
        if lag > limits.max_replication_lag:
            return Decision(
                "pause",
                PAUSE_RECHECK,
                previous.level,
                f"replica lag {lag:.1f}s > max_replication_lag {limits.max_replication_lag:g}s",
            )
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


_READ = """
SELECT
  (SELECT max(extract(epoch FROM replay_lag))::float8 FROM pg_stat_replication) AS lag,
  count(*) FILTER (WHERE state = 'active' AND backend_type = 'client backend'
                   AND pid <> pg_backend_pid() AND pid <> ALL(CAST(:mine AS int[])))
    AS active,
  count(*) FILTER (WHERE CASE WHEN wait_event_type = 'Lock'
                              THEN pg_blocking_pids(pid) && CAST(:mine AS int[])
                              ELSE false END) AS waits
FROM pg_stat_activity
"""


def read(conn: Connection, worker_pids: Sequence[int]) -> Readings:
    """Read the server's load; ``worker_pids`` are the backfill's own sessions."""
    row = conn.execute(text(_READ), {"mine": list(worker_pids)}).one()
    conn.commit()
    lag = None if row.lag is None else float(row.lag)
    return Readings(lag, int(row.active), int(row.waits))
