"""`migrator status`: a timeline of releases, their phases, steps, traffic changes,
backfill progress, and the contracts due with what blocks them. Reads only."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, text

from migrator.commands.contract import contract_conditions
from migrator.commands.session import STATE, Options
from migrator.db.connection import connect, make_engine
from migrator.engine.lock import AdvisoryLock
from migrator.engine.state import CONTRACT_DUE_PHASES, ContractRecord, Release


@dataclass
class Status:
    """Everything `migrator status` shows."""

    initialised: bool
    # Whether a migrator holds the lock now: without one, a step still recorded as
    # running was interrupted (its rows filled are in the step's `filled`).
    migrator_running: bool = False
    releases: list[dict[str, Any]] = field(default_factory=list)
    contracts_due: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain data for --json."""
        return asdict(self)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _timeline(conn: Connection, release: Release) -> list[dict[str, Any]]:
    return [
        {
            "at": _iso(e["at"]),
            "action": e["action"],
            "actor": e["actor"],
            "details": e["details"],
        }
        for e in STATE.events(conn, release.name)
    ]


def _filled(conn: Connection, release: str) -> dict[tuple[str, str], dict[str, int]]:
    """Rows filled per batched step, summed from its key ranges: each batch commits with
    its range's count, so this is the truth after any interruption (kill -9 included),
    where the step's checkpoint may be a report interval old."""
    rows = conn.execute(
        text(
            "SELECT phase, key, sum(rows), sum(batches), count(*), "
            "count(*) FILTER (WHERE status = 'done') "
            "FROM migrator.backfill_ranges WHERE release = :r GROUP BY phase, key"
        ),
        {"r": release},
    ).all()
    return {
        (r[0], r[1]): {
            "rows": int(r[2]),
            "batches": int(r[3]),
            "ranges": int(r[4]),
            "ranges_done": int(r[5]),
        }
        for r in rows
    }


def _blocked_by(conn: Connection, release: Release, pending: list[ContractRecord]) -> list[str]:
    now = conn.execute(text("SELECT now()")).scalar_one()
    verdicts = contract_conditions(conn, release, pending, now)
    return [f"{c.name}: {c.detail}" for c in verdicts if not c.ok]


def status(opts: Options) -> Status:
    """Releases with their phases, steps and timeline; the contracts due."""
    engine = make_engine(opts.database_url)
    try:
        with connect(engine) as conn:
            if not STATE.exists(conn):
                return Status(initialised=False)
            contracts = STATE.contracts(conn)
            running = AdvisoryLock.holders(conn) > 0
            out = Status(initialised=True, migrator_running=running)
            for release in STATE.releases(conn):
                mine = [c for c in contracts if c.release == release.name]
                pending = [c for c in mine if c.status != "done"]
                filled = _filled(conn, release.name)
                out.releases.append(
                    {
                        "name": release.name,
                        "after": release.after,
                        "phase": release.phase,
                        "plan_hash": release.plan_hash,
                        "created_at": _iso(release.created_at),
                        "updated_at": _iso(release.updated_at),
                        "completed_at": _iso(release.completed_at),
                        "steps": [
                            {
                                "phase": st.phase,
                                "key": st.key,
                                "description": st.description,
                                "status": st.status,
                                "attempts": st.attempts,
                                "started_at": _iso(st.started_at),
                                "finished_at": _iso(st.finished_at),
                                "error": st.error,
                                "checkpoint": st.checkpoint,
                                "filled": filled.get((st.phase, st.key)),
                                "interrupted": st.status == "running" and not running,
                            }
                            for st in STATE.steps(conn, release.name)
                        ],
                        "contracts": [
                            {
                                "key": c.key,
                                "description": c.description,
                                "status": c.status,
                                "not_before": _iso(c.not_before),
                                "done_at": _iso(c.done_at),
                                "error": c.error,
                            }
                            for c in mine
                        ],
                        "timeline": _timeline(conn, release),
                    }
                )
                if pending and release.phase in CONTRACT_DUE_PHASES:
                    out.contracts_due.append(
                        {
                            "release": release.name,
                            "steps": len(pending),
                            "not_before": _iso(min(c.not_before for c in pending)),
                            "blocked_by": _blocked_by(conn, release, pending),
                        }
                    )
            return out
    finally:
        engine.dispose()
