"""`migrator render`: plans as Alembic revisions, so a team on Alembic keeps one history.

Steps depend on the live catalog (add_column's trigger lists the table's columns, an
alter_column carries over the column's indexes and constraints), so rendering needs a
database in the state the release starts from. Two ways to give one:

- ``--database-url``: the database itself, read only (one plan; nothing is changed);
- otherwise a scratch database, on ``--scratch-url``'s server (created and dropped) or
  on an embedded PostgreSQL started in a temporary folder, loaded with the
  ``--baseline`` SQL file (the schema before the first plan; pg_dump --schema-only
  output). Each plan is then rendered and also run there (expand, backfill, complete,
  contract), so the next plan is rendered against the schema the previous one left.
  With a baseline and no history on disk yet, a baseline revision is written too, so
  ``alembic upgrade head`` builds everything from an empty database.

Expand and rollback steps are computed from the catalog before the expand, the contract
steps from the catalog after it, as `migrator complete` does.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Connection

from migrator.commands.backfill import backfill, backfill_specs
from migrator.commands.complete import complete
from migrator.commands.contract import contract, contract_steps
from migrator.commands.expand import expand
from migrator.commands.session import Options, at_operation, keyed_steps, operation_context
from migrator.db.connection import connect, make_engine
from migrator.db.embedded import embedded
from migrator.engine.steps import BackfillSpec, Step, step
from migrator.errors import UsageError
from migrator.observer import NULL_OBSERVER, Observer
from migrator.plan.models import Plan
from migrator.render.revisions import (
    ALEMBIC_INI,
    BASELINE,
    ENV_PY,
    SCRIPT_MAKO,
    RenderedPhase,
    heads,
    read_history,
    render_baseline,
    render_revision,
    revision_id,
)
from migrator.verify.scratch import ScratchServer


@dataclass
class RenderOptions:
    """Where to write, and which database the steps are computed against."""

    out: Path = Path("migrations")
    database_url: str | None = None
    baseline: Path | None = None
    scratch_url: str | None = None  # a server for the scratch database (default: embedded)
    observer: Observer = NULL_OBSERVER


@dataclass
class RenderResult:
    """The files written."""

    revisions: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {"revisions": self.revisions, "files": self.files, "environment": self.environment}


_SCHEMA_STEP = step(
    "migrator-schema",
    "migrator's own schema, for trigger functions",
    "CREATE SCHEMA IF NOT EXISTS migrator",
)


def render(plans: Sequence[tuple[Plan, str]], opts: RenderOptions) -> RenderResult:
    """Write the expand and contract revisions of each plan (given with its file's path).

    Without ``opts.baseline``, the first plan's own ``baseline:`` file (relative to the
    plan) is the baseline, as for `migrator check`.
    """
    if not plans:
        raise UsageError("render: give at least one plan")
    ordered = _in_order(plans)
    first, first_path = ordered[0]
    if opts.baseline is None and first.baseline is not None and not opts.database_url:
        path = Path(first_path).parent / first.baseline
        if not path.is_file():
            raise UsageError(f"{first_path}: baseline {first.baseline!r} is not a file ({path})")
        opts = replace(opts, baseline=path)
    if opts.database_url and len(ordered) > 1:
        raise UsageError(
            "render --database-url reads one plan against the database as it is; render "
            "several plans against a --baseline (an embedded server runs them in turn)"
        )
    if opts.database_url and opts.baseline:
        raise UsageError("render: give --database-url or --baseline, not both")
    versions = opts.out / "versions"
    result = RenderResult()
    result.environment = _write_environment(opts.out)
    history = [
        r
        for r in read_history(versions)
        if r.revision not in {revision_id(p.release, ph) for p, _ in ordered for ph in _PHASES}
    ]
    down = _first_down(ordered[0][0], history, opts, versions, result)
    baseline_sql = opts.baseline.read_text(encoding="utf-8") if opts.baseline else None
    if opts.database_url:
        rendered = [_render_live(ordered[0][0], ordered[0][1], opts.database_url, down)]
    else:
        rendered = _render_scratch(ordered, baseline_sql, down, opts)
    versions.mkdir(parents=True, exist_ok=True)
    for phase in (p for pair in rendered for p in pair):
        for old in versions.glob(f"{phase.revision}_*.py"):
            old.unlink()
        path = versions / phase.filename
        path.write_text(render_revision(phase), encoding="utf-8")
        result.files.append(str(path))
        result.revisions.append(phase.revision)
        opts.observer.info(f"wrote {path} ({phase.release} {phase.phase})")
    return result


_PHASES = ("expand", "contract")


def _in_order(plans: Sequence[tuple[Plan, str]]) -> list[tuple[Plan, str]]:
    """The plans in `after:` order; they must form one chain."""
    by_name = {p.release: (p, s) for p, s in plans}
    if len(by_name) != len(plans):
        raise UsageError("render: two plans have the same release name")
    firsts = [p for p, _ in plans if p.after not in by_name]
    if len(firsts) != 1:
        raise UsageError(
            "render: the plans do not form one chain through `after:` "
            f"(starts: {', '.join(p.release for p in firsts) or 'none'})"
        )
    chain = [by_name[firsts[0].release]]
    while len(chain) < len(plans):
        nxt = [v for v in by_name.values() if v[0].after == chain[-1][0].release]
        if len(nxt) != 1:
            raise UsageError(
                f"render: {len(nxt)} plans follow {chain[-1][0].release}; the chain must be linear"
            )
        chain.append(nxt[0])
    return chain


def _first_down(
    first: Plan,
    history: list[Any],
    opts: RenderOptions,
    versions: Path,
    result: RenderResult,
) -> str | None:
    """What the first plan's expand revises: the previous release, the head, or a baseline."""
    if first.after:
        wanted = revision_id(first.after, "contract")
        if not any(r.revision == wanted for r in history):
            raise UsageError(
                f"render: {first.release} comes after {first.after}, whose contract revision "
                f"({wanted}) is not in {versions}; render {first.after} first"
            )
        return wanted
    tops = heads(history)
    if len(tops) > 1:
        raise UsageError(
            f"render: {versions} has {len(tops)} heads ({', '.join(tops)}); merge them first"
        )
    if tops:
        return tops[0]
    if opts.baseline is not None:
        rev = revision_id(BASELINE, BASELINE)
        versions.mkdir(parents=True, exist_ok=True)
        path = versions / f"{rev}_baseline.py"
        path.write_text(
            render_baseline(
                opts.baseline.read_text(encoding="utf-8"), rev, None, opts.baseline.name
            ),
            encoding="utf-8",
        )
        result.files.append(str(path))
        result.revisions.append(rev)
        return rev
    return None


def _write_environment(out: Path) -> list[str]:
    """alembic.ini, env.py and script.py.mako, where they are not there yet."""
    written = []
    out.mkdir(parents=True, exist_ok=True)
    (out / "versions").mkdir(exist_ok=True)
    for name, content in (
        ("alembic.ini", ALEMBIC_INI),
        ("env.py", ENV_PY),
        ("script.py.mako", SCRIPT_MAKO),
    ):
        path = out / name
        if not path.exists():
            path.write_text(content, encoding="utf-8")
            written.append(str(path))
    return written


# -- computing the steps ------------------------------------------------------------------------


def _before(plan: Plan, conn: Connection, down: str | None, source: str) -> RenderedPhase:
    """The expand revision: expand steps and backfills up, rollback steps down."""
    ctx = operation_context(plan, conn)
    ups: list[tuple[str, Step]] = [("migrator-schema", _SCHEMA_STEP)]
    ops = list(enumerate(plan.operations("expand")))
    for index, op in ops:
        with at_operation(plan, "expand", index, op):
            op.validate_live(ctx)
            ups += keyed_steps(index, op, op.expand(ctx))
    downs: list[tuple[str, Step]] = []
    for index, op in reversed(ops):
        downs += keyed_steps(index, op, op.rollback(ctx))
    fills: list[tuple[str, BackfillSpec, list[tuple[str, str]]]] = []
    for key, spec in backfill_specs(plan, ctx):
        keys = ctx.catalog.primary_key(spec.schema, spec.table)
        types = {c.name: c.type for c in ctx.catalog.columns(spec.schema, spec.table)}
        fills.append((key, spec, [(k, types[k]) for k in keys if k in types]))
    return RenderedPhase(
        release=plan.release,
        phase="expand",
        revision=revision_id(plan.release, "expand"),
        down_revision=down,
        upgrade=ups,
        downgrade=downs,
        backfills=fills,
        lock_timeout_ms=round(plan.database.lock_timeout * 1000),
        schema=plan.schema_name,
        source=source,
        notes=list(dict.fromkeys(ctx.notes)),
    )


def _after(plan: Plan, conn: Connection, source: str) -> RenderedPhase:
    """The contract revision, from the catalog as the expand leaves it."""
    ctx = operation_context(plan, conn)
    return RenderedPhase(
        release=plan.release,
        phase="contract",
        revision=revision_id(plan.release, "contract"),
        down_revision=revision_id(plan.release, "expand"),
        upgrade=contract_steps(plan, ctx),
        downgrade_refused=(
            f"the contract of {plan.release} dropped what only the old version used; it "
            "cannot be undone by a downgrade (restore from a backup, or write a new release)"
        ),
        lock_timeout_ms=round(plan.database.lock_timeout * 1000),
        schema=plan.schema_name,
        source=source,
        notes=list(dict.fromkeys(ctx.notes)),
    )


def _render_live(
    plan: Plan, source: str, url: str, down: str | None
) -> tuple[RenderedPhase, RenderedPhase]:
    """Against the live database, read only: both revisions from the catalog as it is."""
    engine = make_engine(url)
    try:
        with connect(engine) as conn:
            before = _before(plan, conn, down, source)
            after = _after(plan, conn, source)
            conn.rollback()
    finally:
        engine.dispose()
    return before, after


def _render_scratch(
    plans: Sequence[tuple[Plan, str]],
    baseline_sql: str | None,
    down: str | None,
    opts: RenderOptions,
) -> list[tuple[RenderedPhase, RenderedPhase]]:
    """A scratch database on the given server, or on an embedded one for the occasion."""
    name = f"migrator_render_{uuid.uuid4().hex[:8]}"
    if opts.scratch_url is not None:
        server = ScratchServer(opts.scratch_url)
        url = server.create(name)
        try:
            return _render_on(url, plans, baseline_sql, down, opts.observer)
        finally:
            server.drop(name)
    with tempfile.TemporaryDirectory(prefix="migrator-render-") as folder, embedded(folder) as pg:
        return _render_on(pg.create_database(name), plans, baseline_sql, down, opts.observer)


def _render_on(
    url: str,
    plans: Sequence[tuple[Plan, str]],
    baseline_sql: str | None,
    down: str | None,
    observer: Observer,
) -> list[tuple[RenderedPhase, RenderedPhase]]:
    """Render each plan, then run it so the next one is rendered against its result."""
    out = []
    if baseline_sql:
        with psycopg.connect(url, autocommit=True) as raw:
            raw.execute(baseline_sql.encode())
    engine = make_engine(url)
    try:
        for plan, source in plans:
            with connect(engine) as conn:
                before = _before(plan, conn, down, source)
                conn.rollback()
            opts = Options(
                database_url=url,
                observer=observer,
                actor="migrator render",
                force=True,
                force_reason="rendering on a scratch server",
            )
            expand(plan, opts)
            backfill(plan, opts)
            with connect(engine) as conn:
                after = _after(plan, conn, source)
                conn.rollback()
            complete(plan, opts)
            contract(opts, plan.release)
            out.append((before, after))
            down = after.revision
    finally:
        engine.dispose()
    return out
