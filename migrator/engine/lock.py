"""The session-level advisory lock that keeps two migrators from interleaving."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from migrator.db.connection import connect
from migrator.errors import LockNotAcquired

# Two 32-bit keys: "migr" "ator". Fixed, so every migrator on a database agrees.
LOCK_KEYS = (0x6D696772, 0x61746F72)


class AdvisoryLock:
    """Held on a dedicated connection for the length of a command."""

    def __init__(self, engine: Engine, holder: str) -> None:
        self.engine = engine
        self.holder = holder[:63]
        self._conn: Connection | None = None
        self._cm: object | None = None

    def acquire(self) -> None:
        """Take the lock or raise LockNotAcquired naming who holds it."""
        cm = connect(self.engine)
        conn = cm.__enter__()
        conn.execute(text("SELECT set_config('application_name', :n, false)"), {"n": self.holder})
        got = conn.execute(
            text("SELECT pg_try_advisory_lock(:a, :b)"), {"a": LOCK_KEYS[0], "b": LOCK_KEYS[1]}
        ).scalar_one()
        conn.commit()
        if not got:
            holder = self.who_holds(conn)
            cm.__exit__(None, None, None)
            raise LockNotAcquired(
                f"another migrator is running on this database ({holder}); "
                "wait for it to finish, then run this command again"
            )
        self._conn, self._cm = conn, cm

    @staticmethod
    def who_holds(conn: Connection) -> str:
        """A description of the session holding the lock."""
        row = (
            conn.execute(
                text(
                    "SELECT a.pid, a.application_name, a.usename, a.client_addr, "
                    "date_trunc('second', a.backend_start) AS since "
                    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.classid = :a AND l.objid = :b AND l.objsubid = 2"
                ),
                {"a": LOCK_KEYS[0], "b": LOCK_KEYS[1]},
            )
            .mappings()
            .first()
        )
        conn.commit()
        if row is None:
            return "it has just finished"
        client = f" from {row['client_addr']}" if row["client_addr"] else ""
        return (
            f"held by {row['application_name'] or 'an unnamed session'!r}, pid {row['pid']}, "
            f"user {row['usename']}{client}, connected since {row['since']}"
        )

    @staticmethod
    def holders(conn: Connection) -> int:
        """How many sessions hold migrator's lock now, exclusively or shared (backfills):
        a step recorded as running with none is one whose process was stopped."""
        held = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = :a AND objid = :b AND objsubid = 2"
            ),
            {"a": LOCK_KEYS[0], "b": LOCK_KEYS[1]},
        ).scalar_one()
        return int(held)

    def release(self) -> None:
        """Let the lock go (closing the connection would too)."""
        if self._conn is None:
            return
        try:
            self._conn.execute(
                text("SELECT pg_advisory_unlock(:a, :b)"), {"a": LOCK_KEYS[0], "b": LOCK_KEYS[1]}
            )
            self._conn.commit()
        finally:
            assert self._cm is not None
            self._cm.__exit__(None, None, None)  # type: ignore[attr-defined]
            self._conn = self._cm = None

    def __enter__(self) -> AdvisoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
