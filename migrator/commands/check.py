"""`check`: prove both versions' queries work at every phase, and lint the plan.

Builds the schema before, after the expand and after the contract on scratch databases
(the embedded PostgreSQL unless a scratch server is named), runs the compatibility matrix
over the old and new query sets, adds the lint's findings, and returns one `CheckReport`.
Nothing here touches the database named by ``database_url`` except to read its schema
(pg_dump --schema-only) and to record ``check.passed`` (or ``check.failed``) in the
audit log: the switch's gate reads that event. Where the release is already expanded
there, the schema before it is that schema with the plan's rollback run on the copy.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from migrator.commands.complete import complete
from migrator.commands.contract import contract
from migrator.commands.expand import expand
from migrator.commands.rollback import rollback_steps
from migrator.commands.session import Options
from migrator.db.connection import connect, make_engine
from migrator.db.embedded import EmbeddedPostgres, Prepared, memory_folder, start
from migrator.engine.catalog import Catalog
from migrator.engine.executor import Executor
from migrator.engine.state import EXPANDED_PHASES, HALF_APPLIED_PHASES, ReleasePhase, StateStore
from migrator.errors import GateRefused, MigratorError, UsageError
from migrator.lint import RuleSettings, lint_plan
from migrator.observer import NULL_OBSERVER, Observer
from migrator.plan.loader import missing_files
from migrator.plan.models import Plan
from migrator.verify.matrix import Matrix
from migrator.verify.phase_schemas import (
    baseline_file,
    earlier_plans,
    keep_phase_databases,
    kept_phase_databases,
    load_baseline_template,
    phase_databases,
)
from migrator.verify.queries import Parsed, Query, load_query_set
from migrator.verify.report import CheckReport, Finding
from migrator.verify.scratch import DISPOSABLE_SETTINGS, ScratchServer
from migrator.verify.static import column_changes

CHECK_PASSED = "check.passed"
CHECK_FAILED = "check.failed"
SCRATCH_ACTOR = "migrator check (scratch copy)"


class CommandPhases:
    """The verbs a real release uses, applied to a scratch database."""

    def expand(self, plan: Plan, url: str, observer: Observer) -> None:
        expand(plan, Options(database_url=url, observer=observer, actor=SCRATCH_ACTOR))

    def complete_and_contract(self, plan: Plan, url: str, observer: Observer) -> None:
        # Forced: a scratch copy has no rows to backfill and no window to wait for.
        opts = Options(
            database_url=url,
            observer=observer,
            actor=SCRATCH_ACTOR,
            force=True,
            force_reason="migrator check builds the schema after the contract on a scratch copy",
        )
        complete(plan, opts)
        contract(opts, plan.release)

    def undo_expand(self, plan: Plan, url: str, observer: Observer) -> None:
        engine = make_engine(url)
        try:
            with connect(engine) as conn:
                steps, _ = rollback_steps(plan, conn)
                conn.rollback()
            executor = Executor(engine, observer=observer, schema=plan.schema_name)
            for key, st in steps:
                executor.run(key, st)
        finally:
            engine.dispose()


@dataclass
class CheckOptions:
    """What `check` needs besides the plan.

    ``database_url``: the live database; ``before`` is its schema, and a passing check is
    recorded there. ``scratch_url``: a server where check may create and drop its scratch
    databases (default: an embedded PostgreSQL started for the run). ``pg_version``: the
    server version the lint judges by when no live database is given (e.g. 150000).
    ``cache_dir``: where the embedded server's initdb'd data directory is kept between
    runs (None: initdb on each run).
    """

    database_url: str | None = None
    scratch_url: str | None = None
    observer: Observer = NULL_OBSERVER
    actor: str = "migrator"
    pg_version: int | None = None
    lint: bool = True
    lint_settings: RuleSettings = field(default_factory=RuleSettings)
    cache_dir: Path | None = None


# The phase databases a cached data directory holds are named so.
KEPT_PHASES = "migrator_check_kept"


@functools.cache
def _code_digest() -> str:
    """migrator's own source: the phase databases are what this code builds of a plan."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode() + b"\0")
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _variants(plan: Plan, plan_path: Path, opts: CheckOptions) -> list[Prepared]:
    """The cached data directories this check can start from: the baseline loaded (a
    template), then the phase databases built, keyed by the baseline's content, the
    plans applied (this one and its chain) and migrator's code. None where the schema
    before is the live one, or the chain cannot be read (that is reported where the
    phase databases are built)."""
    if opts.database_url is not None or opts.cache_dir is None:
        return []
    try:
        chain = earlier_plans(plan, plan_path)
        baseline = baseline_file(plan, plan_path)
    except MigratorError:
        return []
    variants: list[Prepared] = []
    key = hashlib.sha256(b"phases 1\0" + _code_digest().encode())
    if baseline is not None:
        content = baseline.read_bytes()
        key.update(content)
        digest = hashlib.sha256(content).hexdigest()[:16]
        variants.append((f"baseline-{digest}", partial(load_baseline_template, path=baseline)))
    for _, step in [*chain, (plan_path, plan)]:
        key.update(b"\0" + step.digest().encode())
    build = partial(_keep_phases, plan=plan, plan_path=plan_path)
    variants.append((f"phases-{key.hexdigest()[:16]}", build))
    return variants


def _keep_phases(url: str, plan: Plan, plan_path: Path) -> None:
    server = ScratchServer(url)
    keep_phase_databases(plan, plan_path, server, CommandPhases(), KEPT_PHASES)
    # A check started from this copy only reads its phase databases, and each start
    # copies the whole data directory: the two templates were a quarter of its files.
    server.drop_templates()


def _start_disposable(
    cache: Path | None, variants: list[Prepared]
) -> tuple[EmbeddedPostgres, ScratchServer]:
    # A throwaway cluster: in memory where there is room, without durability from its
    # first start (ScratchServer.make_disposable's settings, with no restart); from a
    # cached data directory that holds the phase databases already (or the baseline),
    # where there is one.
    server = start(
        cache=cache,
        temp_root=memory_folder(),
        settings=DISPOSABLE_SETTINGS,
        prepared=variants or None,
    )
    return server, ScratchServer(server.url, single_use=True)


@contextmanager
def _scratch(
    opts: CheckOptions, variants: list[Prepared] | None = None
) -> Iterator[Callable[[], ScratchServer]]:
    """The scratch server, as a function that waits for it: the embedded server starts in
    the background while the query sets are parsed, and stops when the block ends."""
    if opts.scratch_url is not None:
        given = ScratchServer(opts.scratch_url)
        yield lambda: given
        return
    opts.observer.info("starting an embedded PostgreSQL for the scratch databases")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="migrator-scratch") as pool:
        future = pool.submit(_start_disposable, opts.cache_dir, variants or [])
        try:
            yield lambda: future.result()[1]
        finally:
            server: EmbeddedPostgres | None
            try:
                server, _ = future.result()
            except Exception:  # it failed to start: the caller saw the error already
                server = None
            if server is not None:
                # Reaped and removed while the report is built and shown (the process
                # waits for it before it exits).
                server.stop(discard=True, wait=False)


def _queries(
    plan: Plan, plan_path: Path
) -> tuple[dict[str, tuple[str, list[Query]]], list[Finding]]:
    versions: dict[str, tuple[str, list[Query]]] = {}
    problems: list[Finding] = []
    parsed: Parsed = {}  # the versions share most queries: each text is parsed once
    specs = plan.versions
    for key in ("old", "new"):
        spec = getattr(specs, key) if specs is not None else None
        name = spec.name if spec is not None else key
        if spec is None or spec.queries is None:
            problems.append(
                Finding(
                    check="query-set",
                    severity="warning",
                    reason=f"the plan names no query set for the {key} version: its queries "
                    "are not checked",
                    fix=f"add versions.{key}.queries: a folder of .sql files, a .sql file or "
                    "a .yaml list",
                    file=str(plan_path),
                )
            )
            versions[key] = (name, [])
            continue
        path = Path(spec.queries)
        if not path.is_absolute():
            path = plan_path.parent / path
        if not path.exists():
            raise UsageError(
                f"{plan_path}: versions.{key}.queries: {spec.queries} does not exist ({path})"
            )
        queries = load_query_set(path, parsed=parsed)
        for q in queries:
            if q.error is not None:
                problems.append(
                    Finding(
                        check="syntax",
                        severity="error",
                        reason=f"does not parse: {q.error}",
                        fix="fix the SQL (placeholders may be $1, %(name)s, %s or :name)",
                        file=q.file,
                        line=q.error_line or q.line,
                        query=q.name,
                        version=f"{key} ({name})",
                        sql=q.text,
                    )
                )
        versions[key] = (name, queries)
    return versions, problems


def _lint(
    plan: Plan, plan_path: Path, version: int, before_url: str | None, settings: RuleSettings
) -> list[Finding]:
    """The lint's findings on every statement the plan runs, as check findings.

    The lint asks the ``before`` scratch database (the schema the plan starts from) what
    it needs to know: row counts are nil there, the shapes are the real ones."""
    engine = make_engine(before_url) if before_url else None
    try:
        if engine is None:
            raw = lint_plan(plan, version, enable=settings.enable)
        else:
            with connect(engine) as conn:
                raw = lint_plan(plan, version, catalog=Catalog(conn), enable=settings.enable)
                conn.rollback()
    finally:
        if engine is not None:
            engine.dispose()
    # Check names the operation in the reason and the plan where the lint knows no file.
    return [
        replace(
            f,
            reason=f.reason + (f" ({f.operation})" if f.operation else ""),
            file=f.file or str(plan_path),
            operation=None,
        )
        for f in settings.apply(raw)
        if not f.suppressed
    ]


def _live_version(url: str, plan: Plan) -> tuple[int, bool]:
    """The live server's version, and whether this release is expanded there (then the
    schema before it is rebuilt on the scratch copy with the plan's rollback); refuses
    a database where the release is half expanded, or past its switch window."""
    state = StateStore()
    engine = make_engine(url)
    try:
        with connect(engine) as conn:
            version = Catalog(conn).server_version
            release = state.release(conn, plan.release) if state.exists(conn) else None
    finally:
        engine.dispose()
    if release is None or release.phase == ReleasePhase.ROLLED_BACK:
        return version, False
    if release.phase in EXPANDED_PHASES:
        if release.plan_hash != plan.digest():
            raise GateRefused(
                f"the plan of release {plan.release} changed since it was expanded on this "
                f"database (stored hash {release.plan_hash[:12]}, file "
                f"{plan.digest()[:12]}), so its rollback may not undo that expand; revert "
                "the change, or accept it first (`migrator expand --accept-changed-plan`)",
                gate="plan-unchanged",
            )
        return version, True
    raise GateRefused(
        f"release {plan.release} is {release.phase} on this database, so neither its "
        "schema nor its rollback gives the schema before the release; "
        + (
            "finish it with `migrator expand` first"
            if release.phase in HALF_APPLIED_PHASES
            else "check it without --database-url (from the plan's baseline: or earlier plans)"
        ),
        gate="check-before-expand",
    )


def check(plan: Plan, plan_path: str | Path, opts: CheckOptions) -> CheckReport:
    """Run the compatibility matrix and the lint; the report says whether the plan passes."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    mark = started

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[name] = round(now - mark, 3)
        mark = now

    path = Path(plan_path)
    # A file the plan names that is not there is found before any server starts (the
    # baseline only where it is used: a live database's schema comes before it).
    missing = missing_files(plan, path, baseline=opts.database_url is None)
    if missing:
        raise missing[0]
    live_version, live_expanded = (
        _live_version(opts.database_url, plan) if opts.database_url else (None, False)
    )
    variants = _variants(plan, path, opts)
    with (
        _scratch(opts, variants) as scratch_server,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="migrator-queries") as pool,
    ):
        # The query sets are read while the server starts and the phase databases are
        # built: that is waiting on the server and on psql, this is parsing.
        submitted = time.perf_counter()
        reading = pool.submit(lambda: (_queries(plan, path), time.perf_counter()))
        changes = column_changes(plan)
        search_path = tuple(dict.fromkeys((plan.schema_name, "public")))
        try:
            server = scratch_server()
            scratch_version = server.server_version()
            lap("scratch server")
            kept = kept_phase_databases(server, KEPT_PHASES) if variants else None
            building = (
                contextlib.nullcontext(kept)
                if kept is not None
                else phase_databases(
                    plan,
                    path,
                    server,
                    CommandPhases(),
                    live_url=opts.database_url,
                    live_expanded=live_expanded,
                    # A server started for this check goes as a whole: no drops first.
                    keep=server.single_use,
                )
            )
            dbs = building.__enter__()
        except BaseException:
            # A query set that cannot be read is bad input: it is reported first, as it
            # was when the sets were read before anything else.
            failed = reading.exception()
            if isinstance(failed, MigratorError):
                raise failed from None
            raise
        with contextlib.ExitStack() as phases:
            phases.push(building.__exit__)
            lap("phase databases")
            # The lint asks the before database a few dozen questions, one round trip
            # each, on a connection of its own: mostly waiting, so it runs beside the
            # query reading and the matrix, not after them (its result is waited for
            # after the matrix's, so an error there is still reported first).
            version = live_version or opts.pg_version or scratch_version
            linting = (
                phases.enter_context(
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix="migrator-lint")
                ).submit(_lint, plan, path, version, dbs.urls["before"], opts.lint_settings)
                if opts.lint
                else None
            )
            # The cells connect and read the phases' snapshots while the queries are read.
            matrix = phases.enter_context(Matrix(dbs.urls, changes, search_path, opts.observer))
            (versions, problems), read_at = reading.result()
            lap("queries (read meanwhile)")
            # The reading's own time, to set beside the server's start it overlaps.
            timings["queries, read in the background"] = round(read_at - submitted, 3)
            opts.observer.info(f"schema before the release: {dbs.source}")
            cells = matrix.run(versions)
            lap("matrix")
            lint = linting.result() if linting is not None else []
            lap("lint (run meanwhile)")
            source = dbs.source
        lap("clean-up")
    if opts.scratch_url is None:
        lap("server stop")
    report = CheckReport(
        release=plan.release,
        plan_hash=plan.digest(),
        plan_file=str(path),
        before_source=source,
        server_version=live_version or scratch_version,
        cells=cells,
        lint=lint,
        lint_available=opts.lint,
        problems=problems,
        queries={k: len(v[1]) for k, v in versions.items()},
        timings=timings,
    )
    report.seconds = time.perf_counter() - started
    if opts.database_url is not None:
        record_result(opts.database_url, plan, report, opts.actor)
    return report


def record_result(url: str, plan: Plan, report: CheckReport, actor: str) -> None:
    """Append ``check.passed`` (or ``check.failed``) with the plan's hash to the live
    database's audit log; the switch's gate reads the latest of them for this hash."""
    state = StateStore()
    engine = make_engine(url)
    try:
        with connect(engine) as conn:
            state.init(conn)
            details: dict[str, Any] = {
                "queries": report.queries,
                "warnings": report.counts()["warning"],
                "lint_available": report.lint_available,
            }
            action = CHECK_FAILED if report.failed else CHECK_PASSED
            details["errors"] = report.counts()["error"]
            state.event(conn, actor, action, plan.release, plan.digest(), **details)
            conn.commit()
    finally:
        engine.dispose()


__all__ = [
    "CHECK_FAILED",
    "CHECK_PASSED",
    "CheckOptions",
    "CommandPhases",
    "check",
    "record_result",
]
