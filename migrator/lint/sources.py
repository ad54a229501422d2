"""From a plan or a raw SQL file to units of statements, in the order they run.

A plan's statements are the steps its operations return: expand (in plan order), the
rollback (judged from the state the expand leaves), then the contract (the contract
halves of the expand operations, then ``contract:``). A step is one transaction; an
autocommit step's statements each run alone. A raw SQL file runs as psql runs it:
statements between BEGIN and COMMIT share a transaction, the others run alone.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pglast
from pglast import ast, enums

from migrator.engine.steps import Step
from migrator.errors import (
    LockNotAcquired,
    MigratorError,
    PlanError,
    UsageError,
    ValidationFailed,
)
from migrator.findings import Finding
from migrator.lint.analyzer import Analyzer, LintPhase, Source, Stmt, Unit, statements_of
from migrator.lint.catalog_questions import Live
from migrator.lint.offline import OfflineCatalog
from migrator.lint.rules import RULES, last_id, optional_ids

if TYPE_CHECKING:
    # Only a plan's lint needs the plan models and the operations (imported where it
    # runs): `migrator lint --sql FILE` loads neither.
    from migrator.engine.catalog import Catalog
    from migrator.ops import Operation, Phase
    from migrator.plan.loader import Mark, PlanPositions
    from migrator.plan.models import Plan

DEFAULT_VERSION = 180000
_SECTIONS: tuple[Phase, ...] = ("expand", "contract")


def normalize_version(version: int | None) -> int | None:
    """``11`` or ``110000`` -> 110000 (server_version_num)."""
    if version is None:
        return None
    if version < 1000:
        return version * 10000
    return version


def _live(catalog: Catalog | None) -> Live | None:
    if catalog is None or isinstance(catalog, OfflineCatalog):
        return None
    return Live(catalog.conn, catalog.read_lock)


def _parse(text: str, where: str | Callable[[int], str]) -> list[tuple[ast.Node, str, int]]:
    """The statements of SQL text from a plan; PlanError if it does not parse.

    ``where`` names the place of the text, or maps an offset in it to a place.
    """
    try:
        return list(statements_of(text))
    except pglast.parser.ParseError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        offset = int(exc.args[1]) if len(exc.args) > 1 else 0
        if callable(where):
            raise PlanError(f"SQL does not parse: {message}", location=where(offset)) from None
        line = text[:offset].count("\n") + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        raise PlanError(
            f"SQL does not parse: {message} (line {line}, column {column} of the SQL)",
            location=where,
        ) from None


# -- plans -----------------------------------------------------------------------------------


class _PlanLinter:
    def __init__(
        self, plan: Plan, version: int, catalog: Catalog | None, enable: Collection[str] = ()
    ) -> None:
        from migrator.ops import Context
        from migrator.plan.loader import plan_positions

        self.plan = plan
        self.positions = plan_positions(plan)
        self.version = version
        live = _live(catalog)
        self.offline = live is None
        self.unlinted: list[str] = []
        self.ctx = Context(
            schema=plan.schema_name,
            release=plan.release,
            catalog=catalog if catalog is not None else OfflineCatalog(version),
            server_version=version,
        )
        self.analyzer = Analyzer(
            version,
            schema=plan.schema_name,
            live=live,
            managed=True,
            lock_timeout=plan.database.lock_timeout,
            statement_timeout=plan.database.statement_timeout,
            enable=enable,
        )

    # positions ---------------------------------------------------------------------------

    def _path(self, section: str, index: int) -> tuple[str | int, ...]:
        if self.positions is None:
            return (section, index)
        return self.positions.operation_path(section, index)

    def _source(self, section: str, index: int, op: Operation, context: str) -> Source:
        mark = self.positions.operation(section, index, op.op_name) if self.positions else None
        return Source(
            operation=f"{section}[{index}].{op.op_name}",
            file=self.positions.source if self.positions else None,
            line=mark.line if mark else None,
            column=mark.column if mark else None,
            context=context,
            ignore=dict(op.lint.ignore) if op.lint else {},
        )

    def check_suppressions(self) -> None:
        check_suppressions(self.plan)

    # steps -------------------------------------------------------------------------------

    def _steps(self, op: Operation, phase: LintPhase, section: str, index: int) -> Sequence[Step]:
        """The operation's steps for a phase.

        With no database, an operation that needs the live catalog to build its statements
        is listed as not linted (never passed over silently); with one, its failure is an
        error, as it would be for `migrator expand`.
        """
        method = {"expand": op.expand, "contract": op.contract, "rollback": op.rollback}[phase]
        try:
            return method(self.ctx)
        except LockNotAcquired:
            raise  # a table another session holds: exit 5, said as it is
        except MigratorError as exc:
            if self.offline:
                self.unlinted.append(f"{section}[{index}].{op.op_name} ({phase}): {exc}")
                return ()
            source = self._source(section, index, op, phase)
            where = (
                f"{source.file}:{source.line}:{source.column}"
                if source.file and source.line
                else source.operation
            )
            raise ValidationFailed(
                f"{where}: cannot build its {phase} statements to lint them: {exc}"
            ) from None

    def run_op(self, section: str, index: int, op: Operation, phase: LintPhase) -> None:
        """Judge the steps of one operation for one phase."""
        label = f"{section}[{index}].{op.op_name}"
        if phase != "expand" and any(u.startswith(f"{label} (expand)") for u in self.unlinted):
            # Judging its rollback or contract without its expand would raise false alarms.
            self.unlinted.append(f"{label} ({phase}): its expand could not be built")
            return
        text = op.written_sql(phase)
        if text is not None:
            self._written_sql(section, index, op, phase, text)
            return
        for st in self._steps(op, phase, section, index):
            self._run_step(st, self._source(section, index, op, f"{phase} step {st.key}"), phase)

    def _run_step(
        self, st: Step, source: Source, phase: LintPhase, place: _SqlPlace | None = None
    ) -> None:
        units: list[Unit] = []
        together: list[Stmt] = []
        for statement in st.statements:
            for node, sql, _offset in _parse(statement.sql, source.operation or ""):
                stmt = Stmt(node, sql, place.source_of(sql) if place else source)
                if st.autocommit:
                    units.append(Unit([stmt], transactional=False))
                else:
                    together.append(stmt)
        if together:
            units.append(Unit(together, transactional=True))
        for unit in units:
            self.analyzer.run(unit, phase)

    def _written_sql(
        self, section: str, index: int, op: Operation, phase: LintPhase, text: str
    ) -> None:
        """SQL the plan wrote (a `sql` operation): split into steps as the op does."""
        if not text:
            return
        source = self._source(section, index, op, f"{phase} SQL")
        path = (*self._path(section, index), op.op_name, phase)
        place = _SqlPlace(self, source, path, text)
        parsed = _parse(text, place.location_at)
        # Transaction control is judged here (the operation refuses it, so it never
        # reaches a step); the rest is split into steps by the operation itself.
        rest = []
        for node, sql, _offset in parsed:
            if isinstance(node, ast.TransactionStmt):
                stmt = Stmt(node, sql, place.source_of(sql))
                self.analyzer.run(Unit([stmt], transactional=True), phase)
            else:
                rest.append(sql)
        if not rest:
            return
        remaining = op.with_written_sql(phase, ";\n".join(rest))
        for st in self._steps(remaining, phase, section, index):
            self._run_step(st, source, phase, place)

    def _at(self, source: Source, path: tuple[str | int, ...], text: str, offset: int) -> Source:
        """The source moved to ``offset`` of a SQL text written at ``path`` in the plan."""
        if self.positions is None:
            return source
        mark = self.positions.values.get(path)
        if mark is None:
            return source
        line, column = _locate_in_scalar(self.positions, mark, text, offset)
        return Source(
            operation=source.operation,
            file=source.file,
            line=line,
            column=column,
            context=source.context,
            ignore=source.ignore,
        )


class _SqlPlace:
    """Where the SQL text of a `sql` operation stands in the plan file."""

    def __init__(
        self, linter: _PlanLinter, source: Source, path: tuple[str | int, ...], text: str
    ) -> None:
        self.linter = linter
        self.source = source
        self.path = path
        self.text = text

    def location_at(self, offset: int) -> str:
        """``file:line:column`` of an offset in the text."""
        return self.linter._at(self.source, self.path, self.text, offset).location_text()

    def source_of(self, sql: str) -> Source:
        """The source pointed at the line where ``sql`` starts in the text."""
        offset = self.text.find(sql) if sql else 0
        return self.linter._at(self.source, self.path, self.text, max(offset, 0))


def _locate_in_scalar(
    positions: PlanPositions, mark: Mark, text: str, offset: int
) -> tuple[int, int]:
    """The file line and column of ``offset`` inside a YAML scalar starting at ``mark``."""
    lines = positions.text.splitlines()
    first = lines[mark.line - 1] if 0 < mark.line <= len(lines) else ""
    indicator = first[mark.column - 1 : mark.column] if mark.column <= len(first) else ""
    inner_line = text[:offset].count("\n")
    inner_column = offset - (text.rfind("\n", 0, offset) + 1)
    if indicator in ("|", ">"):
        line = mark.line + 1 + inner_line
        content = lines[line - 1] if line <= len(lines) else ""
        indent = len(content) - len(content.lstrip(" "))
        return line, indent + inner_column + 1
    if inner_line == 0:
        quote = 1 if indicator in ("'", '"') else 0
        return mark.line, mark.column + quote + inner_column
    return mark.line, mark.column


@dataclass
class LintReport:
    """Everything one lint run found.

    ``findings`` includes the suppressed ones (their ``suppressed`` holds the reason);
    ``unlinted`` names the operations whose statements could not be built with no
    database, with the reason: they were not judged.
    """

    findings: list[Finding]
    unlinted: list[str]
    server_version: int

    @property
    def active(self) -> list[Finding]:
        """The findings that count."""
        return [f for f in self.findings if f.suppressed is None]

    @property
    def suppressed(self) -> list[Finding]:
        """The findings the plan suppresses, with their reasons."""
        return [f for f in self.findings if f.suppressed is not None]


def check_suppressions(plan: Plan) -> None:
    """Refuse a plan whose ``lint: {ignore: ...}`` names an unknown rule id (PlanError at
    the id's file:line:column): `migrator plan validate` and the lint both ask."""
    from migrator.plan.loader import plan_positions

    positions = plan_positions(plan)
    for section in _SECTIONS:
        for index, op in enumerate(plan.operations(section)):
            if op.lint is None:
                continue
            for rule_id in op.lint.ignore:
                if rule_id in RULES:
                    continue
                mark = None
                if positions is not None:
                    path = positions.operation_path(section, index)
                    mark = positions.keys.get((*path, op.op_name, "lint", "ignore", rule_id))
                where = (
                    f"{positions.source}:{mark.line}:{mark.column}"
                    if positions and mark
                    else f"{section}[{index}].{op.op_name}"
                )
                raise PlanError(
                    f"lint.ignore: no lint rule {rule_id}; the rules are M001..{last_id()} "
                    "(docs/lint-rules.md)",
                    location=where,
                )


def lint_plan(
    plan: Plan,
    server_version: int | None = None,
    catalog: Catalog | None = None,
    *,
    include_suppressed: bool = False,
    enable: Collection[str] = (),
) -> list[Finding]:
    """Every statement the plan will run, held to the rules of docs/lint-rules.md.

    ``server_version`` is a major version (``11``) or server_version_num (``110000``);
    without it, the catalog's server is asked, else PostgreSQL 18 is assumed. With a
    ``catalog`` (a live connection), the operations build their statements against it
    and the rules that need data (INVALID indexes, duplicates, row counts, current
    column types) are applied. Findings the plan suppresses (``lint: {ignore: ...}``)
    are left out unless ``include_suppressed``. Raises PlanError for an unknown rule id
    in a suppression or SQL that does not parse, ValidationFailed for an operation that
    cannot build its statements against the catalog. With no catalog, see
    `lint_plan_report` for the operations that could not be built offline. ``enable``
    names the optional rules to apply (they are off otherwise).
    """
    report = lint_plan_report(plan, server_version, catalog, enable=enable)
    return list(report.findings) if include_suppressed else report.active


def lint_plan_report(
    plan: Plan,
    server_version: int | None = None,
    catalog: Catalog | None = None,
    *,
    enable: Collection[str] = (),
) -> LintReport:
    """`lint_plan`, with the suppressed findings and the operations left unlinted."""
    check_enabled(enable)
    live = _live(catalog)
    version = normalize_version(server_version)
    if version is None and live is not None:
        version = live.server_version()
    version = version or DEFAULT_VERSION
    linter = _PlanLinter(plan, version, catalog, enable)
    linter.check_suppressions()
    expand_ops = list(enumerate(plan.operations("expand")))
    for index, op in expand_ops:
        try:
            # Operations record what they plan to create (for the ones after them) as
            # they validate; a failed validation is `check`'s and `expand`'s to report.
            op.validate_live(linter.ctx)
        except MigratorError:
            pass
        linter.run_op("expand", index, op, "expand")
    after_expand = linter.analyzer.snapshot()
    for index, op in reversed(expand_ops):
        linter.run_op("expand", index, op, "rollback")
    linter.analyzer.restore(after_expand)
    for index, op in expand_ops:
        linter.run_op("expand", index, op, "contract")
    for index, op in enumerate(plan.operations("contract")):
        linter.run_op("contract", index, op, "contract")
    return LintReport(in_order(linter.analyzer.findings), linter.unlinted, version)


# -- raw SQL ---------------------------------------------------------------------------------


def lint_sql(
    text: str,
    server_version: int | None = None,
    *,
    file: str | None = None,
    catalog: Catalog | None = None,
    assume_in_transaction: bool = False,
    schema: str = "public",
    include_suppressed: bool = False,
    enable: Collection[str] = (),
) -> list[Finding]:
    """A raw SQL migration held to the rules, as psql would run it.

    Statements between BEGIN and COMMIT share a transaction; the others run alone, unless
    ``assume_in_transaction`` (a runner that wraps the file in one transaction). A
    ``catalog`` adds the rules that need the database. A comment
    ``-- migrator-lint: ignore M023 <reason>`` suppresses one rule for the statement that
    follows it (the reason is required). Raises PlanError naming file:line:column for SQL
    that does not parse, or a suppression comment without a reason or with an unknown id.
    ``enable`` names the optional rules to apply (they are off otherwise).
    """
    check_enabled(enable)
    live = _live(catalog)
    version = normalize_version(server_version)
    if version is None and live is not None:
        version = live.server_version()
    analyzer = Analyzer(
        version or DEFAULT_VERSION,
        schema=schema,
        live=live,
        managed=False,
        lock_timeout=None,
        enable=enable,
    )

    statements = _parse_file(text, file)
    waivers = _sql_suppressions(text, file, [offset for _, _, offset in statements])
    # The offset of each line's start: a statement's line is a search, not a count of
    # the text before it (which grew with the square of the file's length).
    starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def source_at(offset: int) -> Source:
        line = bisect.bisect_right(starts, offset)
        column = offset - starts[line - 1] + 1
        return Source(
            operation=None, file=file, line=line, column=column, ignore=waivers.get(offset, {})
        )

    tk = enums.TransactionStmtKind
    block: list[Stmt] | None = [] if assume_in_transaction else None
    opened: Stmt | None = None
    for node, sql, offset in statements:
        stmt = Stmt(node, sql, source_at(offset))
        if isinstance(node, ast.TransactionStmt):
            if node.kind in (tk.TRANS_STMT_BEGIN, tk.TRANS_STMT_START):
                if opened is not None or assume_in_transaction:
                    analyzer.report(
                        "M031",
                        stmt,
                        "nested BEGIN: PostgreSQL ignores it (a warning), and the COMMIT that "
                        "follows ends the outer transaction",
                    )
                    continue
                opened, block = stmt, []
                continue
            if node.kind in (tk.TRANS_STMT_COMMIT, tk.TRANS_STMT_ROLLBACK):
                word = "COMMIT" if node.kind == tk.TRANS_STMT_COMMIT else "ROLLBACK"
                if opened is None:
                    if assume_in_transaction:
                        analyzer.report(
                            "M031",
                            stmt,
                            f"{word} ends the transaction the runner wraps the file in: what "
                            "follows runs outside it",
                        )
                        if block:
                            analyzer.run(Unit(block, transactional=True), None)
                        block = None
                    else:
                        analyzer.report(
                            "M031",
                            stmt,
                            f"{word} with no transaction in progress",
                            "warning",
                        )
                    continue
                if node.kind == tk.TRANS_STMT_ROLLBACK:
                    analyzer.report(
                        "M031",
                        stmt,
                        "ROLLBACK discards the whole block: its changes are not applied",
                        "warning",
                    )
                analyzer.run(Unit(block or [], transactional=True), None)
                opened, block = None, None
                continue
        if block is not None:
            block.append(stmt)
        else:
            analyzer.run(Unit([stmt], transactional=False), None)
    if opened is not None:
        analyzer.report(
            "M031",
            opened,
            "BEGIN without COMMIT: when the session ends the block is rolled back and its "
            "changes are silently not applied",
        )
    if block:
        analyzer.run(Unit(block, transactional=True), None)
    findings = in_order(analyzer.findings)
    return list(findings) if include_suppressed else [f for f in findings if not f.suppressed]


_WAIVER = re.compile(r"--\s*migrator-lint:\s*ignore\b\s*(?P<rule>\S*)\s*(?P<reason>.*)$")


def _sql_suppressions(text: str, file: str | None, starts: list[int]) -> dict[int, dict[str, str]]:
    """Suppression comments of a SQL file, keyed by the start of the statement they precede.

    Comments are found by PostgreSQL's own scanner (pglast), never by hand.
    """
    waivers: dict[int, dict[str, str]] = {}
    if "migrator-lint" not in text:  # no comment to read: the scan is not needed
        return waivers
    for token in pglast.parser.scan(text):
        if token.name != "SQL_COMMENT":
            continue
        found = _WAIVER.match(text[token.start : token.end + 1])
        if found is None:
            continue
        line = text[: token.start].count("\n") + 1
        column = token.start - (text.rfind("\n", 0, token.start) + 1) + 1
        where = f"{file or '<sql>'}:{line}:{column}"
        rule, reason = found["rule"], found["reason"].strip()
        if rule not in RULES:
            raise PlanError(
                f"migrator-lint: ignore: no lint rule {rule or '(none)'}; the rules are "
                f"M001..{last_id()} (docs/lint-rules.md)",
                location=where,
            )
        if not reason:
            raise PlanError(
                f"migrator-lint: ignore {rule} needs a written reason after the rule id",
                location=where,
            )
        following = [s for s in starts if s > token.start]
        if following:
            waivers.setdefault(following[0], {})[rule] = reason
    return waivers


def check_enabled(enable: Collection[str]) -> None:
    """Refuse to enable a rule that is not an optional one (UsageError, exit 2)."""
    optional = optional_ids()
    for rule_id in enable:
        if rule_id not in optional:
            raise UsageError(
                f"--enable {rule_id}: the optional rules are {', '.join(optional)} "
                "(the others always apply; docs/lint-rules.md)"
            )


def in_order(findings: list[Finding]) -> list[Finding]:
    """Findings in file order (stable: one statement's findings keep their order)."""
    return sorted(findings, key=lambda f: (f.file or "", f.line or 1 << 30, f.column or 0))


def _parse_file(text: str, file: str | None) -> list[tuple[ast.Node, str, int]]:
    def locate(offset: int) -> str:
        line = text[:offset].count("\n") + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        return f"{file or '<sql>'}:{line}:{column}"

    return _parse(text, locate)
