"""`migrator switch` and the traffic half of `migrator rollback`.

The switch is gated: this release's expand must be applied and `migrator check` must
have passed for this very plan (its hash), unless --force with a recorded reason.
Every traffic change lands in migrator.events with who, when, from, to and backend.

The traffic rollback takes no advisory lock on purpose: it is the emergency brake and
must work within seconds even while a `migrator switch` is watching (that switch sees
the traffic gone and stops).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import Connection, Engine

from migrator.commands.backfill import unfilled_before_switch
from migrator.commands.session import (
    STATE,
    Options,
    Session,
    check_plan_hash,
    find_release,
    session,
)
from migrator.db.connection import connect, make_engine
from migrator.engine.state import (
    CONTRACTED_PHASES,
    NOT_EXPANDED_PHASES,
    ON_GREEN_PHASES,
    SWITCH_PHASES,
    Release,
    ReleasePhase,
)
from migrator.errors import GateRefused, UsageError
from migrator.plan.models import Plan
from migrator.switch import ALL_BLUE, REAL_TIME, Split, Timing, TrafficBackend, make_backend
from migrator.switch.flow import MoveRecorder, Switcher, Watched
from migrator.switch.settings import SwitchSettings

TRAFFIC_EVENT = "switch.traffic"
WATCHED_EVENT = "switch.watched"


@dataclass
class SwitchResult:
    """What a switch (or a traffic rollback) did."""

    release: str
    backend: str
    before: dict[str, int] | None
    after: dict[str, int] | None
    moves: list[dict[str, Any]] = field(default_factory=list)
    phase: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data for --json."""
        return asdict(self)

    def summary(self) -> str:
        """One line: from where to where, through what."""
        before = f"{self.before['green']}% green" if self.before else "unknown"
        after = f"{self.after['green']}% green" if self.after else "unchanged"
        return f"traffic {before} -> {after} via {self.backend}"


def _settings(plan: Plan) -> SwitchSettings:
    if plan.switch is None:
        raise UsageError(f"plan {plan.release} has no switch: section; there is no traffic to move")
    return plan.switch


def _last_recorded(engine: Engine, release: str) -> Split | None:
    """The split of the last recorded traffic change, for backends that cannot tell."""
    with connect(engine) as conn:
        if not STATE.exists(conn):
            return None
        moves = [e for e in STATE.events(conn, release) if e["action"] == TRAFFIC_EVENT]
    if not moves:
        return None
    return Split(int(moves[-1]["details"]["to"]["green"]))


def _current(backend: TrafficBackend, engine: Engine, release: str) -> Split:
    """The backend's answer, else the last recorded change, else all on blue."""
    return backend.current() or _last_recorded(engine, release) or ALL_BLUE


def _log(engine: Engine, opts: Options, plan: Plan, action: str, details: dict[str, Any]) -> None:
    with connect(engine) as conn:
        STATE.event(conn, opts.actor, action, plan.release, plan.digest(), **details)
        conn.commit()


def _recorder(engine: Engine, opts: Options, plan: Plan) -> MoveRecorder:
    return lambda move: _log(engine, opts, plan, TRAFFIC_EVENT, move.details())


def _watch_recorder(engine: Engine, opts: Options, plan: Plan) -> Watched:
    return lambda split: _log(engine, opts, plan, WATCHED_EVENT, split.as_dict())


def _watched(engine: Engine, release: str, current: Split) -> bool:
    """Whether the split traffic is at was watched to the end: the last traffic change
    recorded is followed by a passed watch of this split. Not so after a run killed or
    interrupted during a watch, or traffic moved by other means."""
    with connect(engine) as conn:
        if not STATE.exists(conn):
            return False
        events = [
            e for e in STATE.events(conn, release) if e["action"] in (TRAFFIC_EVENT, WATCHED_EVENT)
        ]
    return bool(
        events
        and events[-1]["action"] == WATCHED_EVENT
        and int(events[-1]["details"]["green"]) == current.green
    )


def _set_phase(
    engine: Engine,
    release: Release | None,
    phase: ReleasePhase,
    allowed: tuple[ReleasePhase, ...],
) -> None:
    """Move the release's phase, but only from one of `allowed` (backfill may be ahead)."""
    if release is None:
        return
    with connect(engine) as conn:
        current = STATE.release(conn, release.name)
        if current is not None and current.phase in allowed and current.phase != phase:
            STATE.set_phase(conn, release.name, phase)
        conn.commit()


def check_problem(conn: Connection, plan: Plan) -> str | None:
    """What keeps the check gate shut for this plan, or None: the latest check verdict
    for its hash must be a pass, from a check that ran its lint."""
    events = STATE.events(conn) if STATE.exists(conn) else []
    checks = [
        e for e in events if e["action"].startswith("check.") and e["plan_hash"] == plan.digest()
    ]
    if not checks or checks[-1]["action"] != "check.passed":
        verdict = "failed" if checks else "has not run"
        return (
            f"`migrator check` {verdict} for this plan (hash {plan.digest()[:12]}); run "
            "`migrator check PLAN --database-url ...` and fix what it finds"
        )
    if checks[-1]["details"].get("lint_available") is False:
        return (
            "`migrator check` passed for this plan without its lint (--no-lint); run it "
            "with the lint: the lock-safety rules are part of the gate"
        )
    return None


def switch_problems(s: Session, plan: Plan, release: Release | None) -> list[str]:
    """Every switch gate to green that does not hold (besides the plan hash and the
    contract, checked first): expand applied, the backfills the new version needs
    first done, and check passed for this plan's hash. Reads only."""
    problems: list[str] = []
    if release is None or release.phase in NOT_EXPANDED_PHASES:
        state = "has not been expanded" if release is None else f"is {release.phase}"
        problems.append(f"release {plan.release} {state}; run `migrator expand` first")
    else:
        with s.conn() as conn:
            status = STATE.step_status(conn, plan.release, "expand")
        undone = sorted(k for k, v in status.items() if v != "done")
        if undone or (plan.expand and not status):
            problems.append(
                f"expand steps of {plan.release} not done: {', '.join(undone) or 'all'}; "
                "rerun `migrator expand`"
            )
        else:
            with s.conn() as conn:
                unfilled = unfilled_before_switch(plan, conn)
            if unfilled:
                problems.append(
                    f"backfill not done: {'; '.join(unfilled)}; the new version reads "
                    "the new name, NULL on existing rows until then: run `migrator "
                    "backfill` first"
                )
    with s.conn() as conn:
        unchecked = check_problem(conn, plan)
    if unchecked:
        problems.append(unchecked)
    return problems


def _gates(s: Session, plan: Plan, opts: Options, to: str) -> Release:
    """Expand applied, the backfills the new version needs first done, and check passed
    for this plan's hash; --force skips, recorded. Back to blue needs none of it: blue
    works on the expanded schema until the contract."""
    release = find_release(s, plan.release)
    if release is not None and release.phase in CONTRACTED_PHASES:
        raise GateRefused(
            f"cannot switch {plan.release}: its contract has run ({release.phase}); "
            "the old version could no longer work with this schema",
            gate="not-contracted",
        )
    if to == "blue" and release is not None:
        return release
    if release is not None and release.phase not in NOT_EXPANDED_PHASES:
        check_plan_hash(s, plan, release)
    problems = switch_problems(s, plan, release)
    if problems and not opts.force:
        raise GateRefused(f"cannot switch {plan.release}: " + "; ".join(problems), gate="switch")
    if problems:
        s.event(
            "switch.forced",
            plan.release,
            plan.digest(),
            reason=opts.force_reason,
            skipped=problems,
        )
        opts.observer.warning("gates skipped by --force: " + "; ".join(problems))
    if release is None:
        raise GateRefused(
            f"cannot switch {plan.release}: it has no release record even with --force; "
            "run `migrator expand` first",
            gate="expanded",
        )
    return release


def _planned_moves(
    engine: Engine,
    settings: SwitchSettings,
    release: Release,
    current: Split,
    to: Literal["green", "blue"],
    step: int | None,
) -> tuple[list[int], bool]:
    """The green percentages traffic moves to from ``current``, and whether the split it
    stands at is watched first."""
    if to == "blue":
        percents: list[int] = [0]
    elif step is not None:
        percents = [settings.steps[step - 1]]
    else:
        percents = [p for p in settings.steps if p > current.green]
    # Traffic already partly or wholly on green that no run watched to the end (a
    # run killed or interrupted during its watch): watch it before going on. A
    # release `switched` with all traffic on green was watched (the phase is set
    # after the watch), also by migrators that did not record `switch.watched`.
    resume = (
        to == "green"
        and current.green > 0
        and all(p >= current.green for p in percents)
        and not (release.phase == ReleasePhase.SWITCHED and current.green == 100)
        and not _watched(engine, release.name, current)
    )
    forward = [p for p in percents if p != current.green] if to == "green" else percents
    return forward, resume


def switch(
    plan: Plan,
    opts: Options,
    *,
    to: Literal["green", "blue"] = "green",
    step: int | None = None,
    timing: Timing = REAL_TIME,
    backend: TrafficBackend | None = None,
) -> SwitchResult:
    """Smoke-test green, move traffic step by step, watch each step; a failed probe
    moves everything back to blue and raises WatchFailed (exit 3)."""
    settings = _settings(plan)
    if to not in ("green", "blue"):
        raise UsageError(f"--to takes green or blue, not {to!r}")
    if step is not None and (to == "blue" or not 1 <= step <= len(settings.steps)):
        raise UsageError(
            "--step goes with --to green"
            if to == "blue"
            else f"--step takes 1..{len(settings.steps)} (steps: {settings.steps}), not {step}"
        )
    backend = backend or make_backend(settings, timing=timing, observer=opts.observer)
    with session(opts, "switch", plan.release) as s:
        release = _gates(s, plan, opts, to)
        result = SwitchResult(plan.release, backend.describe(), None, None)
        current = _current(backend, s.engine, plan.release)
        result.before = current.as_dict()
        if to == "green" and not settings.smoke and not settings.watch.probes:
            opts.observer.warning(
                f"switch of {plan.release}: nothing is verified: the plan has no "
                "switch.smoke tests and no switch.watch.probes"
            )
        forward, resume = _planned_moves(s.engine, settings, release, current, to, step)
        if opts.dry_run:
            if resume:
                opts.observer.info(f"would watch {current} first: no run watched it to the end")
            for p in forward:
                opts.observer.info(f"would move traffic to {Split(p)} via {backend.describe()}")
            result.after = current.as_dict()
            return result
        backend.preflight()
        record = _recorder(s.engine, opts, plan)
        switcher = Switcher(
            backend,
            settings,
            record,
            timing=timing,
            observer=opts.observer,
            watched=_watch_recorder(s.engine, opts, plan),
        )
        s.event(
            "switch.start",
            plan.release,
            plan.digest(),
            to=to,
            step=step,
            backend=backend.describe(),
        )
        try:
            if to == "blue":
                after = switcher.move(ALL_BLUE, "switch --to blue", before=current)
                _set_phase(s.engine, release, ReleasePhase.EXPANDED, ON_GREEN_PHASES)
            else:
                if resume:
                    _set_phase(s.engine, release, ReleasePhase.SWITCHING, SWITCH_PHASES)
                    switcher.resume(current)
                if forward:
                    switcher.smoke()
                    _set_phase(s.engine, release, ReleasePhase.SWITCHING, SWITCH_PHASES)
                    after = switcher.forward(forward, current=current)
                else:
                    if not resume:
                        opts.observer.info(f"traffic is already {current}")
                    after = current
                if after.green == 100 and (
                    forward
                    or resume
                    or release.phase in (ReleasePhase.EXPANDED, ReleasePhase.SWITCHING)
                ):
                    # Also for a run that died after its last watch passed, before
                    # recording it.
                    backend.after_watch()
                    _set_phase(s.engine, release, ReleasePhase.SWITCHED, SWITCH_PHASES)
        except Exception:
            # Whatever failed, a split of 0% means the release is back to expanded.
            try:
                now = backend.current()
            except Exception:  # the backend itself may be what failed
                now = switcher.moves[-1].after if switcher.moves else current
            if now is not None and now.green == 0:
                _set_phase(s.engine, release, ReleasePhase.EXPANDED, ON_GREEN_PHASES)
            result.moves = [m.details() for m in switcher.moves]
            s.event("switch.failed", plan.release, plan.digest(), moves=result.moves)
            raise
        result.after = after.as_dict()
        result.moves = [m.details() for m in switcher.moves]
        final = find_release(s, plan.release)
        result.phase = final.phase if final else None
        s.event("switch.done", plan.release, plan.digest(), to=result.after)
    return result


def rollback_traffic(
    plan: Plan,
    opts: Options,
    *,
    timing: Timing = REAL_TIME,
    backend: TrafficBackend | None = None,
) -> SwitchResult | None:
    """Put all traffic on blue if any is on green; None when none was (the schema
    rollback may then proceed). Refused once the contract has run."""
    engine = make_engine(opts.database_url)
    try:
        release: Release | None = None
        with connect(engine) as conn:
            if STATE.exists(conn):
                release = STATE.release(conn, plan.release)
        if release is not None and release.phase in CONTRACTED_PHASES:
            raise GateRefused(
                f"cannot roll back {plan.release}: its contract has run ({release.phase}), so "
                "the old version could no longer work with this schema; fix forward with a "
                "new release instead",
                gate="not-contracted",
            )
        if plan.switch is None:
            return None
        backend = backend or make_backend(plan.switch, timing=timing, observer=opts.observer)
        current = _current(backend, engine, plan.release)
        if current.green == 0:
            # A rollback that moved the traffic but died before fixing the phase.
            if not opts.dry_run:
                _set_phase(engine, release, ReleasePhase.EXPANDED, ON_GREEN_PHASES)
            return None
        result = SwitchResult(plan.release, backend.describe(), current.as_dict(), None)
        if opts.dry_run:
            opts.observer.info(f"would move all traffic to blue (now {current})")
            return result
        switcher = Switcher(
            backend,
            plan.switch,
            _recorder(engine, opts, plan),
            timing=timing,
            observer=opts.observer,
        )
        after = switcher.move(ALL_BLUE, "rollback", before=current)
        _set_phase(engine, release, ReleasePhase.EXPANDED, ON_GREEN_PHASES)
        result.after = after.as_dict()
        result.moves = [m.details() for m in switcher.moves]
        latest = None
        with connect(engine) as conn:
            latest = STATE.release(conn, plan.release) if release else None
        result.phase = latest.phase if latest else None
        return result
    finally:
        engine.dispose()


def traffic_problem(
    plan: Plan, opts: Options, *, backend: TrafficBackend | None = None
) -> str | None:
    """What keeps `complete` from retiring blue, or None: traffic not all on green."""
    if plan.switch is None:
        return None
    backend = backend or make_backend(plan.switch, observer=opts.observer)
    engine = make_engine(opts.database_url)
    try:
        current = _current(backend, engine, plan.release)
    finally:
        engine.dispose()
    if current.green == 100:
        return None
    return (
        f"traffic is {current} ({backend.describe()}); complete retires blue, so run "
        "`migrator switch` until all traffic is on green"
    )


def require_all_green(plan: Plan, opts: Options, *, backend: TrafficBackend | None = None) -> None:
    """`complete` retires blue: refuse while any traffic is still on blue."""
    problem = traffic_problem(plan, opts, backend=backend)
    if problem is not None:
        raise GateRefused(
            f"cannot complete {plan.release}: {problem} (or pass --force with a reason)",
            gate="switched",
        )
