"""`migrator release PLAN`: the whole release in one command, gate after gate.

check -> expand -> switch -> backfill -> complete (the backfill goes before the switch
when the plan says `backfill.when: before_switch`, or renames a column: the new version
reads the new name). `check` runs first: it works on scratch copies of the live schema,
so it proves both versions' queries before anything changes. Each phase is the same
function as its own verb and skips what is done, so a rerun resumes where the last run
stopped. The first gate that fails stops the release with its message; nothing after it
runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.commands.backfill import backfill
from migrator.commands.check import CheckOptions, check
from migrator.commands.complete import complete
from migrator.commands.expand import expand
from migrator.commands.session import Options
from migrator.commands.switch import check_problem, switch
from migrator.db.connection import connect, make_engine
from migrator.errors import FindingsError, MigratorError
from migrator.plan.models import Plan
from migrator.switch import REAL_TIME, Timing
from migrator.words import count


@dataclass
class ReleaseResult:
    """The phases run, the ones skipped as already done, and where it stopped."""

    release: str
    phases: list[dict[str, Any]] = field(default_factory=list)
    stopped_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {"release": self.release, "phases": self.phases, "stopped_at": self.stopped_at}


def phase_order(plan: Plan) -> list[str]:
    """The phases `release` runs, in order, for this plan."""
    traffic = ["switch"] if plan.switch is not None else []
    if plan.backfill.when == "before_switch" or any(
        op.fills_before_switch for op in plan.operations("expand")
    ):
        middle = ["backfill", *traffic]
    else:
        middle = [*traffic, "backfill"]
    return ["check", "expand", *middle, "complete"]


def _check_passed(url: str, plan: Plan) -> bool:
    """Whether the switch's check gate is open for this plan (see `check_problem`)."""
    engine = make_engine(url)
    try:
        with connect(engine) as conn:
            return check_problem(conn, plan) is None
    finally:
        engine.dispose()


def release(
    plan: Plan,
    plan_path: str | Path,
    opts: Options,
    *,
    timing: Timing = REAL_TIME,
    scratch_url: str | None = None,
    workers: int = 1,
) -> ReleaseResult:
    """Run the release's phases in order, stopping at the first gate that fails."""
    result = ReleaseResult(plan.release)
    observer = opts.observer

    def run_check() -> str:
        # The check passes with no query set, which a first user took for proof.
        if plan.versions is None:
            observer.warning(
                f"release {plan.release}: skipped the query check: the plan has no "
                "versions: (add versions.old.queries and versions.new.queries)"
            )
        else:
            for key in ("old", "new"):
                if getattr(plan.versions, key).queries is None:
                    observer.warning(
                        f"release {plan.release}: skipped the query check of the {key} "
                        f"version: the plan has no versions.{key}.queries"
                    )
        if _check_passed(opts.database_url, plan):
            return "skipped: passed before for this plan"
        report = check(
            plan,
            plan_path,
            CheckOptions(
                database_url=opts.database_url,
                scratch_url=scratch_url,
                observer=observer,
                actor=opts.actor,
            ),
        )
        if report.failed:
            raise FindingsError(
                f"check failed for {plan.release}: {count(report.counts()['error'], 'finding')}; "
                f"run `migrator check {plan_path}` for the report"
            )
        return "passed"

    phases: dict[str, Callable[[], Any]] = {
        "check": run_check,
        "expand": lambda: expand(plan, opts),
        "switch": lambda: switch(plan, opts, timing=timing),
        "backfill": lambda: backfill(plan, opts, workers=workers),
        "complete": lambda: complete(plan, opts),
    }
    for name in phase_order(plan):
        observer.info(f"\n== {name} ==")
        try:
            outcome = phases[name]()
        except MigratorError as exc:
            result.stopped_at = name
            result.phases.append({"phase": name, "status": "stopped", "reason": str(exc)})
            observer.warning(f"release {plan.release} stopped at {name}")
            raise
        summary = outcome if isinstance(outcome, str) else "done"
        result.phases.append({"phase": name, "status": summary})
    return result


__all__ = ["ReleaseResult", "phase_order", "release"]
