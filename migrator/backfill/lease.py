"""The migrator lock, taken in shared mode by backfills.

Every other command takes migrator's advisory lock exclusively. Backfills of one
release take the same lock shared, so several backfill processes (pods of a Job with
parallelism N) run together and cooperate through ``migrator.backfill_ranges``, while
expand, rollback or contract still cannot start under them, nor they under those.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Engine, text

from migrator.db.connection import connect
from migrator.engine.lock import LOCK_KEYS, AdvisoryLock
from migrator.errors import LockNotAcquired

# Serialises the state schema's CREATE ... IF NOT EXISTS between backfills starting
# together (concurrent IF NOT EXISTS can still collide in the catalog).
INIT_LOCK = (LOCK_KEYS[0], 0x696E6974)


class SharedLock:
    """migrator's advisory lock in shared mode, on its own session, for a ``with`` block."""

    def __init__(self, engine: Engine, holder: str) -> None:
        self.engine = engine
        self.holder = holder[:63]
        self._cm: AbstractContextManager[Connection] | None = None
        self._conn: Connection | None = None

    def __enter__(self) -> SharedLock:
        cm = connect(self.engine)
        conn = cm.__enter__()
        conn.execute(text("SELECT set_config('application_name', :n, false)"), {"n": self.holder})
        got = conn.execute(
            text("SELECT pg_try_advisory_lock_shared(:a, :b)"),
            {"a": LOCK_KEYS[0], "b": LOCK_KEYS[1]},
        ).scalar_one()
        conn.commit()
        if not got:
            holder = AdvisoryLock.who_holds(conn)
            cm.__exit__(None, None, None)
            raise LockNotAcquired(
                f"another migrator command is running on this database ({holder}); "
                "wait for it to finish, then run the backfill again"
            )
        self._cm, self._conn = cm, conn
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._cm is None or self._conn is None:
            return
        cm, conn = self._cm, self._conn
        self._cm = self._conn = None
        try:
            # The pool keeps the session open, so the lock is let go explicitly.
            conn.execute(
                text("SELECT pg_advisory_unlock_shared(:a, :b)"),
                {"a": LOCK_KEYS[0], "b": LOCK_KEYS[1]},
            )
            conn.commit()
        finally:
            cm.__exit__(None, None, None)


def lock_init(conn: Connection) -> None:
    """Hold the state-schema init lock until the caller's transaction ends."""
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": INIT_LOCK[0], "b": INIT_LOCK[1]}
    )
