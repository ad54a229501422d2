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
from migrator.engine.state import CONTRACT_DUE_PHASES, ContractRecord, Release


@dataclass
class Status:
    """Everything `migrator status` shows."""

    initialised: bool
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
            out = Status(initialised=True)
            for release in STATE.releases(conn):
                mine = [c for c in contracts if c.release == release.name]
                pending = [c for c in mine if c.status != "done"]
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
