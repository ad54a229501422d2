"""The schema at each phase of a release, built on scratch databases.

- ``before``: the live schema (pg_dump --schema-only of --database-url), else the plan's
  ``baseline:`` SQL file, else the chain of earlier plans in the plan's folder applied
  from empty (each expanded, completed and contracted), else an empty database.
- ``expanded``: a template copy of ``before`` with this plan's expand run on it, through
  the same command functions a real release uses.
- ``contracted``: a template copy of ``expanded``, completed and contracted (forced: the
  scratch copy has no rows to backfill and no window to wait for).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from migrator.errors import MigratorError, PlanError, UsageError
from migrator.observer import NULL_OBSERVER, Observer
from migrator.plan.loader import load_plan
from migrator.plan.models import Plan
from migrator.verify.scratch import ScratchServer, copy_schema, load_sql

PhaseName = Literal["before", "expanded", "contracted"]
PHASES: tuple[PhaseName, ...] = ("before", "expanded", "contracted")
EMPTY = "an empty database"


class PhaseBuildError(MigratorError):
    """The plan could not be applied to the scratch copy (the expand or contract failed)."""

    def __init__(self, phase: str, cause: MigratorError, source: str = "") -> None:
        hint = (
            "; the schema before the release was an empty database: name it with "
            "`baseline: schema.sql` in the plan, or pass --database-url"
            if source == EMPTY
            else ""
        )
        super().__init__(f"building the {phase} schema on a scratch copy: {cause}{hint}")
        self.exit_code = cause.exit_code
        self.phase = phase


class Phases(Protocol):
    """How a plan is applied to a database: the command functions, handed down by the
    commands layer (verify sits below it and does not import it)."""

    def expand(self, plan: Plan, url: str, observer: Observer) -> None:
        """Run the plan's expand on ``url``."""

    def complete_and_contract(self, plan: Plan, url: str, observer: Observer) -> None:
        """Complete the release and run its contract now (forced: a scratch copy)."""

    def undo_expand(self, plan: Plan, url: str, observer: Observer) -> None:
        """Run the statements of the plan's rollback on ``url``, a copy of a database
        the plan was expanded on (no state there: its rows are not copied)."""


@dataclass
class PhaseDatabases:
    """The scratch databases, one per phase, and where ``before`` came from."""

    urls: dict[str, str]
    source: str
    names: list[str] = field(default_factory=list)


def earlier_plans(plan: Plan, plan_path: Path) -> list[tuple[Path, Plan]]:
    """The plans this one follows (``after:``), oldest first, from the plan's folder,
    back to the first with a ``baseline:``. None where the plan has its own: that is the
    schema before it (a new chain, or a release after one from before migrator)."""
    if plan.after is None or plan.baseline is not None:
        return []
    by_release: dict[str, tuple[Path, Plan]] = {}
    for candidate in sorted(plan_path.parent.glob("*.y*ml")):
        if candidate.resolve() == plan_path.resolve():
            continue
        try:
            other = load_plan(candidate)
        except PlanError:
            continue  # not a plan, or a broken one that this plan does not follow
        by_release[other.release] = (candidate, other)
    chain: list[tuple[Path, Plan]] = []
    wanted: str | None = plan.after
    while wanted is not None:
        found = by_release.get(wanted)
        if found is None:
            if chain and chain[-1][1].baseline is not None:  # the chain starts from a file
                break
            raise UsageError(
                f"{plan_path}: the plan follows release {wanted!r}, but no plan of that "
                f"release is in {plan_path.parent} and no baseline: names the schema before "
                "it; add `baseline: schema.sql` to the plan, or pass --database-url"
            )
        if any(p.release == wanted for _, p in chain):
            raise UsageError(f"{plan_path}: the `after:` chain loops at release {wanted!r}")
        chain.append(found)
        if found[1].baseline is not None:
            break
        wanted = found[1].after
    return list(reversed(chain))


def _baseline_path(plan: Plan, plan_path: Path) -> Path | None:
    if plan.baseline is None:
        return None
    path = (plan_path.parent / plan.baseline).resolve()
    if not path.is_file():
        raise UsageError(f"{plan_path}: baseline {plan.baseline!r} is not a file ({path})")
    return path


class _Cache:
    """Baselines loaded once per scratch server and kept as templates (keyed by content)."""

    @staticmethod
    def name(path: Path) -> str:
        return f"migrator_baseline_{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"

    @staticmethod
    def template_for(server: ScratchServer, path: Path) -> str:
        name = _Cache.name(path)
        if not server.exists(name):
            loading = f"{name}_{server.token}"
            url = server.create(loading)
            try:
                load_sql(url, path)
                # Renaming the finished copy makes the cache safe against a half-load.
                server.rename(loading, name)
            except MigratorError:
                server.drop(loading)
                # Another check on this server loaded the same baseline meanwhile (its
                # rename came first): that copy serves.
                if not server.exists(name):
                    raise
        return name


def baseline_file(plan: Plan, plan_path: Path) -> Path | None:
    """The baseline file the schema before ``plan`` starts from (its own ``baseline:``
    or the first of its chain of earlier plans), or None."""
    chain = earlier_plans(plan, plan_path)
    first_path, first = chain[0] if chain else (plan_path, plan)
    return _baseline_path(first, first_path)


def load_baseline_template(url: str, path: Path) -> None:
    """Load a baseline as the template database `before_database` looks for, on the
    server at ``url`` (a data directory check keeps between runs with it loaded)."""
    _Cache.template_for(ScratchServer(url), path)


def before_database(
    plan: Plan,
    plan_path: Path,
    server: ScratchServer,
    phases: Phases,
    name: str,
    *,
    observer: Observer = NULL_OBSERVER,
) -> str:
    """Create database ``name`` on ``server`` holding the schema before ``plan``: its
    chain of earlier plans applied from the first one's ``baseline:`` (or from empty).
    Returns where the schema came from; the caller drops the database."""
    chain = earlier_plans(plan, plan_path)
    first_path, first = chain[0] if chain else (plan_path, plan)
    baseline = _baseline_path(first, first_path)
    if baseline is not None and (not server.single_use or server.exists(_Cache.name(baseline))):
        server.create(name, template=_Cache.template_for(server, baseline))
    else:
        server.create(name)
        if baseline is not None:
            load_sql(server.url(name), baseline)
    source = f"baseline {baseline.name}" if baseline is not None else EMPTY
    for earlier_path, earlier in chain:
        try:
            phases.expand(earlier, server.url(name), observer)
            phases.complete_and_contract(earlier, server.url(name), observer)
        except MigratorError as exc:
            hint = (
                f"; the chain starts from an empty database: add `baseline: "
                f"schema.sql` to {chain[0][0].name}, or pass --database-url"
                if source == EMPTY
                else ""
            )
            raise UsageError(
                f"applying the earlier plan {earlier_path.name} to build the schema "
                f"before {plan.release}: {exc}{hint}"
            ) from None
    if chain:
        source += " + " + ", ".join(p.release for _, p in chain)
    return source


@contextmanager
def phase_databases(
    plan: Plan,
    plan_path: Path,
    server: ScratchServer,
    phases: Phases,
    *,
    live_url: str | None = None,
    live_expanded: bool = False,
    observer: Observer = NULL_OBSERVER,
    keep: bool = False,
    prefix: str | None = None,
) -> Iterator[PhaseDatabases]:
    """Build the three phase databases; they are dropped when the block ends (unless
    ``keep``). ``prefix``: their names' (default: one of this server's own).

    ``live_expanded``: the plan is already expanded on the live database, so ``before``
    is its schema with the plan's rollback run on the copy.
    """
    prefix = prefix or f"migrator_check_{server.token}"
    names = {phase: f"{prefix}_{phase}" for phase in PHASES}
    created: list[str] = []
    try:
        before = names["before"]
        if live_url is not None:
            source = "the live schema (pg_dump --schema-only)"
            url = server.create(before)
            created.append(before)
            with tempfile.TemporaryDirectory(prefix="migrator-check-") as tmp:
                copy_schema(live_url, server, before, Path(tmp), plan.database.lock_timeout)
            if live_expanded:
                source += f", with the expand of {plan.release} undone (its rollback)"
                try:
                    phases.undo_expand(plan, url, observer)
                except MigratorError as exc:
                    raise PhaseBuildError("before", exc, source) from None
        else:
            created.append(before)
            source = before_database(plan, plan_path, server, phases, before, observer=observer)
        expanded = names["expanded"]
        server.create(expanded, template=before)
        created.append(expanded)
        try:
            phases.expand(plan, server.url(expanded), observer)
        except MigratorError as exc:
            raise PhaseBuildError("expanded", exc, source) from None
        contracted = names["contracted"]
        server.create(contracted, template=expanded)
        created.append(contracted)
        try:
            phases.complete_and_contract(plan, server.url(contracted), observer)
        except MigratorError as exc:
            raise PhaseBuildError("contracted", exc, source) from None
        yield PhaseDatabases(
            urls={phase: server.url(name) for phase, name in names.items()},
            source=source,
            names=list(names.values()),
        )
    finally:
        if not keep:
            for name in reversed(created):
                server.drop(name)


def kept_phase_databases(server: ScratchServer, prefix: str) -> PhaseDatabases | None:
    """The phase databases `keep_phase_databases` left on ``server`` (a data directory
    check keeps between runs), or None."""
    names = {phase: f"{prefix}_{phase}" for phase in PHASES}
    source = server.database_comment(names["before"])
    if source is None:
        return None
    return PhaseDatabases(
        urls={phase: server.url(name) for phase, name in names.items()},
        source=source,
        names=list(names.values()),
    )


def keep_phase_databases(
    plan: Plan, plan_path: Path, server: ScratchServer, phases: Phases, prefix: str
) -> None:
    """Build the phase databases of ``plan`` on ``server`` under ``prefix`` and keep
    them, with where ``before`` came from as its comment; the baseline templates go
    (the phase databases are all a later check needs of this server)."""
    with phase_databases(plan, plan_path, server, phases, keep=True, prefix=prefix) as dbs:
        server.set_database_comment(dbs.names[0], dbs.source)
    for name in server.databases(like=r"migrator\_baseline\_%"):
        server.drop(name)


__all__ = [
    "PHASES",
    "PhaseBuildError",
    "PhaseDatabases",
    "Phases",
    "baseline_file",
    "before_database",
    "earlier_plans",
    "keep_phase_databases",
    "kept_phase_databases",
    "load_baseline_template",
    "phase_databases",
]
