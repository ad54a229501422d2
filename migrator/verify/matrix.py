"""The compatibility matrix: each version's queries at each phase of the release.

Cells that must pass: old@before, old@expanded, new@expanded, new@contracted. Reported as
information: new@before (what breaks if the new version ships before the expand) and
old@contracted (why the contract must wait for the old version to go).

In each cell every query is PREPAREd on the phase's scratch database inside a
transaction that is rolled back (names, types, ambiguous columns, functions), then held
to the static checks of `migrator.verify.static`.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import pq

from migrator.observer import NULL_OBSERVER, Observer
from migrator.verify.probes import CellProbe, probe_cell
from migrator.verify.queries import Query
from migrator.verify.report import Cell, Finding, QueryResult
from migrator.verify.snapshot import Snapshot, take
from migrator.verify.static import CellContext, ColumnChange, static_findings

Version = Literal["old", "new"]


@dataclass(frozen=True)
class CellSpec:
    """Which version at which phase, and whether it decides the exit code."""

    version: Version
    phase: str
    must_pass: bool


CELLS: tuple[CellSpec, ...] = (
    CellSpec("old", "before", True),
    CellSpec("old", "expanded", True),
    CellSpec("new", "expanded", True),
    CellSpec("new", "contracted", True),
    CellSpec("new", "before", False),
    CellSpec("old", "contracted", False),
)

HOME = {"old": "before", "new": "contracted"}

# The phase before, whose constraints a version already met: what the expand adds is
# held against the old version's writes, what the contract adds against the new one's.
PREVIOUS = {("old", "expanded"): "before", ("new", "contracted"): "expanded"}

# SQLSTATEs PREPARE raises once every name is resolved: the query is sound, only the
# parameter types are left to the driver (``SELECT $1``).
_PARAM_ONLY = {"42P18", "42P08"}


def connect(url: str, search_path: tuple[str, ...]) -> psycopg.Connection[Any]:
    """A connection for one phase: the plan's search path, a guard on runaway statements."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(
        psycopg.sql.SQL("SET search_path TO {}").format(
            psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(s) for s in search_path)
        )
    )
    conn.execute("SET statement_timeout = '30s'")
    conn.autocommit = False
    return conn


class Preparer:
    """PREPAREs queries on one connection; every transaction it opens is rolled back."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.count = 0

    def prepare(self, sql: str) -> tuple[psycopg.Error, int] | None:
        """None when the server accepts the statement, else its error and where the query
        starts in the statement sent (for the error's position)."""
        self.count += 1
        prefix = f"PREPARE migrator_check_{self.count} AS "
        try:
            # Bytes: the query is sent as written, with no client-side placeholder handling.
            self.conn.execute((prefix + sql).encode())
        except psycopg.Error as exc:
            self.conn.rollback()
            return exc, len(prefix)
        return None

    def prepare_all(
        self, sqls: list[str], batch: int = 32
    ) -> list[tuple[psycopg.Error, int] | None]:
        """`prepare` for each statement, in round trips of ``batch`` statements.

        Most queries prepare fine, so a batch is sent as one message. When any of it
        fails the transaction is rolled back and that batch is prepared again in libpq's
        pipeline mode, each PREPARE its own implicit transaction (a Sync after each), so
        each error is the statement's own, with its own position, in one more round trip
        (without pipeline mode: one by one). Failures come in runs (a cell where the
        schema lacks what a version uses), so after a batch that failed the next one goes
        to the pipeline first, until one passes whole: a failing batch costs one round
        trip, not a BEGIN, a failed message, a ROLLBACK and the pipeline.
        """
        pipelined = psycopg.Pipeline.is_supported()
        results: list[tuple[psycopg.Error, int] | None] = []
        failing = False
        for start in range(0, len(sqls), batch):
            chunk = sqls[start : start + batch]
            if failing and pipelined:
                outcomes = self._pipelined(chunk)
                failing = any(outcome is not None for outcome in outcomes)
                results += outcomes
                continue
            names = range(self.count + 1, self.count + 1 + len(chunk))
            self.count += len(chunk)
            message = ";\n".join(
                f"PREPARE migrator_check_{n} AS {sql}" for n, sql in zip(names, chunk, strict=True)
            )
            try:
                # One simple-query message; bytes, so nothing is taken for a placeholder.
                self.conn.execute(message.encode())
            except psycopg.Error:
                self.conn.rollback()
                failing = True
                if pipelined:
                    results += self._pipelined(chunk)
                    continue
                # Prepared statements outlive the rollback: forget the batch's first ones.
                self.conn.execute(b"DEALLOCATE ALL")
                self.conn.rollback()
                results += [self.prepare(sql) for sql in chunk]
                continue
            results += [None] * len(chunk)
        return results

    def _pipelined(self, chunk: list[str]) -> list[tuple[psycopg.Error, int] | None]:
        pgconn = self.conn.pgconn
        encoding = self.conn.info.encoding
        results: list[tuple[psycopg.Error, int] | None] = []
        pgconn.enter_pipeline_mode()
        try:
            prefixes = []
            for sql in chunk:
                self.count += 1
                prefix = f"PREPARE migrator_check_{self.count} AS "
                prefixes.append(len(prefix))
                # Bytes, no parameters: sent as written, no placeholder handling.
                pgconn.send_query_params((prefix + sql).encode(encoding), None)
                pgconn.pipeline_sync()
            while pgconn.flush():
                pass
            for length in prefixes:
                error: psycopg.Error | None = None
                while (result := pgconn.get_result()) is not None:
                    if result.status == pq.ExecStatus.FATAL_ERROR and error is None:
                        error = psycopg.errors.error_from_result(result, encoding=encoding)
                sync = pgconn.get_result()
                if sync is None or sync.status != pq.ExecStatus.PIPELINE_SYNC:
                    raise psycopg.OperationalError("the pipeline of PREPAREs lost its place")
                results.append(None if error is None else (error, length))
        finally:
            pgconn.exit_pipeline_mode()
        return results

    def finish(self) -> None:
        """Roll back and forget every prepared statement."""
        self.conn.rollback()
        self.conn.autocommit = True
        self.conn.execute("DEALLOCATE ALL")
        self.conn.autocommit = False


def _position_line(query: Query, exc: psycopg.Error, start: int) -> tuple[int, int | None]:
    position = exc.diag.statement_position
    if position is None:
        return query.line, None
    offset = int(position) - 1 - start
    if offset < 0 or offset > len(query.sql):
        return query.line, None
    before = query.sql[:offset]
    line = query.line + before.count("\n")
    column = offset - (before.rfind("\n") + 1) + 1
    return line, column


def _prepare_fix(state: str | None, spec: CellSpec, label: str, message: str = "") -> str:
    old, new = spec.version == "old", spec.version == "new"
    if message.startswith("invalid input value for enum"):
        return (
            "add the label with add_enum_value under expand: (and keep it while a version "
            "uses it), or fix the query"
        )
    if message.startswith("operator does not exist"):
        state = "42804"  # a type mismatch, not a missing name
    if spec.phase == "before":
        if new:
            return (
                "nothing to do if the new version ships after the expand; this is what "
                "breaks if it ships first"
            )
        return "the query fails on the live schema already: fix the query"
    missing = state in ("42703", "42P01", "42883", "42704", "3F000")
    if old and spec.phase == "expanded" and missing:
        return (
            f"the expand removes or renames something {label} uses: keep it while the old "
            "version runs (rename_column / rename_table keep the old name), and move the drop "
            "to contract:"
        )
    if old and spec.phase == "contracted":
        return "run the contract only after the old version is retired"
    if new and spec.phase == "expanded" and missing:
        return (
            f"the expand must add everything {label} uses: add it under expand: "
            "(add_column, create_table, ...), or fix the query"
        )
    if new and spec.phase == "contracted" and missing:
        return f"the contract removes something {label} still uses: keep it, or change the query"
    if state == "42702":
        return "qualify the column with its table: a column of that name is now in two tables"
    if state in ("42804", "42846", "22P02", "42725"):
        return "the column's type differs at this phase: cast in the query, or convert with alter_column up:/down:"
    if state == "55000" and "view" in message:
        return (
            "keep the view a simple one over one table (auto-updatable) while this version "
            "writes through it, or give it INSTEAD OF triggers"
        )
    if state == "42P10":
        return "keep the unique index or constraint the ON CONFLICT target needs"
    return "change the plan so the schema at this phase serves the query, or change the query"


def run_cell(
    spec: CellSpec,
    version_name: str,
    queries: list[Query],
    preparer: Preparer,
    snaps: dict[str, Snapshot],
    changes: list[ColumnChange],
) -> Cell:
    """Check every query of one version at one phase."""
    outcomes = preparer.prepare_all([q.sql for q in _checked(queries)])
    return judge_cell(spec, version_name, queries, outcomes, preparer.conn, snaps, changes)


def _checked(queries: list[Query]) -> list[Query]:
    """The queries PREPARE is asked about, in order."""
    return [q for q in queries if q.tree is not None and q.preparable]


def judge_cell(
    spec: CellSpec,
    version_name: str,
    queries: list[Query],
    outcomes: list[tuple[psycopg.Error, int] | None],
    conn: psycopg.Connection[Any],
    snaps: dict[str, Snapshot],
    changes: list[ColumnChange],
) -> Cell:
    """One cell's findings from the outcomes of PREPARE (one for each of the checked
    queries, in order), the static checks and the probes (run on ``conn``)."""
    label = f"{spec.version} ({version_name})"
    ctx = CellContext(
        version=spec.version,
        version_label=label,
        phase=spec.phase,
        must_pass=spec.must_pass,
        snapshot=snaps[spec.phase],
        home=snaps[HOME[spec.version]],
        before=snaps["before"],
        changes=changes,
    )
    cell = Cell(spec.version, version_name, spec.phase, spec.must_pass)
    checked = _checked(queries)
    prepared = iter(outcomes)
    previous = PREVIOUS.get((spec.version, spec.phase))
    probed = probe_cell(
        conn,
        CellProbe(
            version=spec.version,
            version_label=label,
            phase=spec.phase,
            must_pass=spec.must_pass,
            snapshot=snaps[spec.phase],
            before=snaps["before"],
            previous=snaps[previous] if previous is not None else None,
        ),
        [q for q, failed in zip(checked, outcomes, strict=True) if failed is None],
    )
    for query in queries:
        result = QueryResult(query.name, query.file, query.line)
        cell.results.append(result)
        if query.tree is None:
            result.note = "does not parse (reported once, above)"
            continue
        if not query.preparable:
            result.note = "not a statement PREPARE takes: checked by the parser only"
        else:
            failed = next(prepared)
            if failed is not None and failed[0].diag.sqlstate not in _PARAM_ONLY:
                error = failed[0]
                line, column = _position_line(query, error, failed[1])
                message = error.diag.message_primary or str(error).strip().splitlines()[0]
                hint = f" ({error.diag.message_hint})" if error.diag.message_hint else ""
                state = error.diag.sqlstate
                result.findings.append(
                    Finding(
                        check="prepare",
                        severity="error" if spec.must_pass else "info",
                        reason=f"{message}{hint} [{state}]",
                        fix=_prepare_fix(state, spec, label, message),
                        file=query.file,
                        line=line,
                        column=column,
                        query=query.name,
                        version=label,
                        phase=spec.phase,
                        must_pass=spec.must_pass,
                        sql=query.text,
                    )
                )
        result.findings += static_findings(query, ctx)
        result.findings += probed.get(id(query), [])
    return cell


def run_matrix(
    urls: dict[str, str],
    versions: dict[str, tuple[str, list[Query]]],
    changes: list[ColumnChange],
    search_path: tuple[str, ...],
    observer: Observer = NULL_OBSERVER,
) -> list[Cell]:
    """Every cell of the matrix; ``versions`` maps old/new to (name, queries)."""
    with Matrix(urls, changes, search_path, observer) as matrix:
        return matrix.run(versions)


class _NotRun(Exception):
    """The matrix was left before its queries were given (the caller failed meanwhile)."""


class Matrix:
    """The six cells, each on its own connection, the six at once, started before the
    queries are known: each cell connects, and the first cell of each phase reads the
    phase's snapshot, while the caller still reads the query sets (that is parsing, on
    one core; this is mostly the server's work, on the other). `run` gives the queries
    and waits for the cells; leaving the block without it closes the connections.

    While some cells wait for the server's answers (on both cores), another runs its
    static checks; a cell needs the others' snapshots (home, before, previous) only once
    its PREPAREs are answered."""

    def __init__(
        self,
        urls: dict[str, str],
        changes: list[ColumnChange],
        search_path: tuple[str, ...],
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self._urls = urls
        self._changes = changes
        self._search_path = search_path
        self._observer = observer
        readers: dict[str, CellSpec] = {}
        for spec in CELLS:
            readers.setdefault(spec.phase, spec)
        self._readers = readers
        self._taken: dict[str, Future[Snapshot]] = {phase: Future() for phase in readers}
        self._versions: Future[dict[str, tuple[str, list[Query]]]] = Future()
        self._done: dict[CellSpec, Cell] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(CELLS), thread_name_prefix="migrator-cell")
        self._cells = [self._pool.submit(self._run, spec) for spec in CELLS]

    def __enter__(self) -> Matrix:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._versions.done():
            self._versions.set_exception(_NotRun())
        self._pool.shutdown(wait=True)

    def run(self, versions: dict[str, tuple[str, list[Query]]]) -> list[Cell]:
        """Every cell of the matrix; ``versions`` maps old/new to (name, queries)."""
        self._versions.set_result(versions)
        for future in self._cells:
            future.result()
        cells = [self._done[spec] for spec in CELLS]
        _point_to_first(cells)
        return cells

    def _run(self, spec: CellSpec) -> None:
        reader = self._readers[spec.phase] is spec
        try:
            conn = connect(self._urls[spec.phase], self._search_path)
            if reader:
                try:
                    snapshot = take(conn, spec.phase, self._search_path)
                    self._taken[spec.phase].set_result(snapshot)
                    conn.rollback()
                except BaseException:
                    conn.close()
                    raise
        except BaseException as exc:
            if reader:  # the cells that wait for this snapshot get the error instead
                self._taken[spec.phase].set_exception(exc)
            raise
        with conn:
            name, queries = self._versions.result()[spec.version]
            preparer = Preparer(conn)
            try:
                outcomes = preparer.prepare_all([q.sql for q in _checked(queries)])
                snaps = {phase: future.result() for phase, future in self._taken.items()}
                cell = judge_cell(spec, name, queries, outcomes, conn, snaps, self._changes)
            finally:
                preparer.finish()
        with self._lock:
            self._done[spec] = cell
            self._observer.progress(
                "check", len(self._done), len(CELLS), cell=f"{spec.version}@{spec.phase}"
            )


def _point_to_first(cells: list[Cell]) -> None:
    """A query that fails the same way at two must-pass cells of its version: the later
    finding says so, so the fix is read once, where it applies first."""
    first: dict[tuple[str, str, int, str, str], tuple[str, str]] = {}
    for cell in cells:
        if not cell.must_pass:
            continue
        for result in cell.results:
            for f in result.findings:
                key = (cell.version, result.file, result.line, f.check, f.reason)
                if key in first:
                    phase, fix = first[key]
                    f.fix = f"it fails the same way at {phase}; fix it there: {fix}"
                else:
                    first[key] = (cell.phase, f.fix)


__all__ = ["CELLS", "CellSpec", "Matrix", "judge_cell", "run_cell", "run_matrix"]
