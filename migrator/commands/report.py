"""`report`: what a release did, gathered from the state schema for `migrator report`.

The audit log (`migrator.events`) gives the phases, the traffic changes with each watch
and the backfill's progress samples; the steps give their durations and checkpoints; the
contract's conditions are the ones recorded when it ran, else asked of the database now.
Reads only. The HTML page is drawn from this by `migrator.report_html`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from migrator.commands.backfill import PROGRESS_EVENT
from migrator.commands.contract import contract_conditions
from migrator.commands.session import STATE, Options
from migrator.commands.switch import TRAFFIC_EVENT, WATCHED_EVENT
from migrator.db.connection import connect, make_engine
from migrator.engine.state import CONTRACT_DUE_PHASES, Release
from migrator.errors import UsageError


@dataclass(frozen=True)
class Span:
    """A phase or a step: when it started and ended (None: not ended)."""

    name: str
    start: datetime
    end: datetime | None
    status: str
    phase: str = ""

    @property
    def seconds(self) -> float | None:
        """Its duration, where it ended."""
        return (self.end - self.start).total_seconds() if self.end else None


@dataclass(frozen=True)
class TrafficPoint:
    """Green's share of the traffic from ``at`` on; ``watched`` when it is a passed watch."""

    at: datetime
    green: int
    reason: str | None = None
    watched: bool = False


@dataclass(frozen=True)
class Sample:
    """A sample of the backfill's progress."""

    at: datetime
    step: str
    rows: int
    total: int | None
    rate: float | None
    throttle: str | None


@dataclass(frozen=True)
class ConditionRow:
    """One condition of the contract and its verdict."""

    name: str
    ok: bool
    detail: str


@dataclass
class ReleaseReport:
    """Everything `migrator report` draws."""

    release: str
    phase: str
    plan_hash: str
    created_at: datetime
    completed_at: datetime | None
    generated_at: datetime
    phases: list[Span] = field(default_factory=list)
    steps: list[Span] = field(default_factory=list)
    traffic: list[TrafficPoint] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    conditions: list[ConditionRow] = field(default_factory=list)
    conditions_source: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)


# The phases a report draws, each from its start event to the first of its end events.
_PHASES = {
    "expand": ("expand.start", ("expand.done", "expand.failed")),
    "switch": ("switch.start", ("switch.done", "switch.failed")),
    "contract": ("contract.start", ("contract.done", "contract.failed")),
    "rollback": ("rollback.start", ("rollback.done", "rollback.failed")),
}


def _phases(events: list[dict[str, Any]], steps: list[Span]) -> list[Span]:
    spans: list[Span] = []
    for event in events:
        action = event["action"]
        if action in ("check.passed", "check.failed"):
            spans.append(Span("check", event["at"], event["at"], action.split(".")[1]))
        elif action == "complete":
            spans.append(Span("complete", event["at"], event["at"], "done"))
        for name, (start, ends) in _PHASES.items():
            if action != start:
                continue
            end = next(
                (
                    e
                    for e in events
                    if e["action"] in ends and e["at"] >= event["at"] and e is not event
                ),
                None,
            )
            status = "running" if end is None else end["action"].split(".")[1]
            spans.append(Span(name, event["at"], end["at"] if end else None, status))
    backfill = [s for s in steps if s.phase == "backfill"]
    if backfill:
        finished = [s.end for s in backfill]
        done = all(finished)
        spans.append(
            Span(
                "backfill",
                min(s.start for s in backfill),
                max(e for e in finished if e) if done else None,
                "done" if done else "running",
            )
        )
    return sorted(spans, key=lambda s: s.start)


def _conditions(
    conn: Connection, release: Release, events: list[dict[str, Any]]
) -> tuple[list[ConditionRow], str]:
    started = [e for e in events if e["action"] == "contract.start"]
    if started:
        last = started[-1]
        details = last["details"] or {}
        forced = set(details.get("forced") or [])
        rows = [
            ConditionRow(name, name not in forced, str(detail))
            for name, detail in (details.get("conditions") or {}).items()
        ]
        return rows, f"as checked when the contract started, {last['at']:%Y-%m-%d %H:%M:%S %Z}"
    pending = [c for c in STATE.contracts(conn) if c.release == release.name and c.status != "done"]
    if not pending or release.phase not in CONTRACT_DUE_PHASES:
        return [], "the contract is scheduled when the release completes"
    now = conn.execute(text("SELECT now()")).scalar_one()
    verdicts = contract_conditions(conn, release, pending, now)
    return [ConditionRow(c.name, c.ok, c.detail) for c in verdicts], "as they stand now"


def report(opts: Options, release: str | None = None) -> ReleaseReport:
    """The report of ``release``, else of the release started last."""
    engine = make_engine(opts.database_url)
    try:
        with connect(engine) as conn:
            if not STATE.exists(conn):
                raise UsageError("no releases: the state schema does not exist yet")
            releases = STATE.releases(conn)
            if release is None:
                if not releases:
                    raise UsageError("no releases yet: nothing to report")
                chosen = max(releases, key=lambda r: r.created_at)
            else:
                found = [r for r in releases if r.name == release]
                if not found:
                    known = ", ".join(r.name for r in releases) or "none"
                    raise UsageError(f"no release {release!r} in this database (known: {known})")
                chosen = found[0]
            events = STATE.events(conn, chosen.name)
            steps = sorted(
                (
                    # A step recorded only once done (a contract step) starts where it ends.
                    Span(st.key, start, st.finished_at, st.status, st.phase)
                    for st in STATE.steps(conn, chosen.name)
                    for start in [st.started_at or st.finished_at]
                    if start is not None
                ),
                key=lambda s: s.start,
            )
            # Contract steps are kept with the contract schedule; each ends at done_at,
            # after the one before it (or the contract's start).
            contract_start = next(
                (e["at"] for e in reversed(events) if e["action"] == "contract.start"), None
            )
            previous = contract_start
            for c in sorted(
                (c for c in STATE.contracts(conn) if c.release == chosen.name and c.done_at),
                key=lambda c: c.position,
            ):
                assert c.done_at is not None
                start = previous if previous is not None and previous <= c.done_at else c.done_at
                steps.append(Span(c.key, start, c.done_at, c.status, "contract"))
                previous = c.done_at
            traffic = [
                TrafficPoint(
                    e["at"],
                    int((e["details"] or {}).get("to", {}).get("green", 0)),
                    (e["details"] or {}).get("reason"),
                    watched=e["action"] == WATCHED_EVENT,
                )
                if e["action"] == TRAFFIC_EVENT
                else TrafficPoint(e["at"], int((e["details"] or {}).get("green", 0)), watched=True)
                for e in events
                if e["action"] in (TRAFFIC_EVENT, WATCHED_EVENT)
            ]
            samples = [
                Sample(
                    e["at"],
                    str(d.get("step", "")),
                    int(d.get("rows") or 0),
                    d.get("total"),
                    d.get("rate"),
                    d.get("throttle"),
                )
                for e in events
                if e["action"] == PROGRESS_EVENT
                for d in [e["details"] or {}]
            ]
            conditions, source = _conditions(conn, chosen, events)
            generated = conn.execute(text("SELECT now()")).scalar_one()
            return ReleaseReport(
                release=chosen.name,
                phase=str(chosen.phase),
                plan_hash=chosen.plan_hash,
                created_at=chosen.created_at,
                completed_at=chosen.completed_at,
                generated_at=generated,
                phases=_phases(events, steps),
                steps=steps,
                traffic=traffic,
                samples=samples,
                conditions=conditions,
                conditions_source=source,
                events=[e for e in events if e["action"] != PROGRESS_EVENT],
            )
    finally:
        engine.dispose()
