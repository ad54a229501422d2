"""The rules applied to parsed statements, one transaction (unit) at a time.

Statements come in as pglast parse trees grouped into units: the statements that share
one transaction, or a single statement that runs alone (autocommit). Each statement goes
through the checks registered for its node type (`migrator.lint.registry`; the checks
live in `migrator.lint.checks`, one module per kind of statement). A `Tracker` follows
what earlier statements of the same plan or file created (tables, columns, indexes,
types, validated checks), so nothing the plan itself just created is held to the
locking rules meant for live tables.
"""

from __future__ import annotations

import copy
from collections.abc import Collection

from pglast import ast, enums

from migrator.findings import Finding
from migrator.lint import checks as _checks  # noqa: F401  (registers the checks)
from migrator.lint.catalog_questions import Live
from migrator.lint.model import (
    LintPhase,
    Source,
    Stmt,
    Tracker,
    Unit,
    UnitState,
    names,
    null_test_of,
    statements_of,
)
from migrator.lint.registry import checks_for, unit_end_checks
from migrator.lint.rules import RULES, Severity

__all__ = ["Analyzer", "LintPhase", "Source", "Stmt", "Unit", "statements_of"]


class Analyzer:
    """Applies the rules to units of statements, in the order they will run."""

    def __init__(
        self,
        server_version: int,
        *,
        schema: str = "public",
        live: Live | None = None,
        managed: bool = True,
        lock_timeout: float | None = 1.0,
        statement_timeout: float | None = None,
        enable: Collection[str] = (),
    ) -> None:
        self.version = server_version
        self.schema = schema
        self.live = live
        # managed: migrator runs the statements (a plan): it owns the transactions and
        # sets lock_timeout. Otherwise a raw SQL file: its own BEGIN/COMMIT, its own SETs.
        self.managed = managed
        self.plan_lock_timeout = lock_timeout
        self.plan_statement_timeout = statement_timeout
        # The optional rules asked for (the others always apply).
        self.enabled = frozenset(enable)
        self.tracker = Tracker()
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, str | None, str, str]] = set()
        self._recent: dict[str | None, list[Stmt]] = {}
        # Per operation (or file): the indexes dropped IF EXISTS so far, so a CREATE
        # asks a set, not every statement before it.
        self._dropped_indexes: dict[str | None, set[str]] = {}

    # -- reporting ---------------------------------------------------------------------

    def report(
        self, rule_id: str, stmt: Stmt, message: str, severity: Severity | None = None
    ) -> None:
        """Record a finding of one rule on one statement (once)."""
        rule = RULES[rule_id]
        if rule.optional and rule_id not in self.enabled:
            return
        src = stmt.source
        key = (rule_id, src.operation, stmt.sql, message)
        if key in self._seen:
            return
        self._seen.add(key)
        prefix = f"{src.context}: " if src.context else ""
        self.findings.append(
            Finding(
                check="lint",
                rule=rule_id,
                severity=severity or rule.severity,
                reason=f"{prefix}{message}",
                fix=rule.safe_form,
                sql=stmt.sql,
                operation=src.operation,
                file=src.file,
                line=src.line,
                column=src.column,
                suppressed=src.ignore.get(rule_id),
            )
        )

    def not_rerunnable(self, stmt: Stmt, what: str) -> None:
        """Rule 30: a statement run outside a transaction that fails when run again."""
        self.report(
            "M030",
            stmt,
            f"{what}: it runs outside a transaction, so after a partial failure the rerun "
            "fails on it",
        )

    # -- snapshots (the rollback is judged from the state after the expand) --------------

    def snapshot(self) -> Tracker:
        """A copy of what is known now."""
        return copy.deepcopy(self.tracker)

    def restore(self, tracker: Tracker) -> None:
        """Go back to a snapshot."""
        self.tracker = tracker

    # -- units -------------------------------------------------------------------------

    def run(self, unit: Unit, phase: LintPhase | None) -> None:
        """Judge one transaction (or one autocommit statement)."""
        state = UnitState()
        for stmt in unit.statements:
            for check in checks_for(stmt.node):
                check(self, stmt, unit, state, phase)
            self.remember(stmt)
        for end in unit_end_checks():
            end(self, state)

    def remember(self, stmt: Stmt) -> None:
        """Keep the statements of the current operation, for rules that look back."""
        self._recent.setdefault(stmt.source.operation, []).append(stmt)
        node = stmt.node
        if (
            isinstance(node, ast.DropStmt)
            and node.removeType == enums.ObjectType.OBJECT_INDEX
            and node.missing_ok
        ):
            dropped = self._dropped_indexes.setdefault(stmt.source.operation, set())
            dropped.update(names(o)[-1] for o in node.objects or ())

    # -- what is known -------------------------------------------------------------------

    def new(self, table: str | None) -> bool:
        """True for a table created earlier by the same plan or file."""
        return table in self.tracker.tables

    def earlier(self, stmt: Stmt) -> list[Stmt]:
        """The statements the same operation (or file) ran before this one."""
        return list(self._recent.get(stmt.source.operation, []))

    def dropped_before(self, stmt: Stmt, index: str) -> bool:
        """True when the same operation drops the index (IF EXISTS) before this statement."""
        return index in self._dropped_indexes.get(stmt.source.operation, ())

    def index_table(self, index: str, schema: list[str]) -> str | None:
        """The table of an index the plan created, or (with a database) any index."""
        if index in self.tracker.indexes:
            return self.tracker.indexes[index]
        if self.live is not None:
            return self.live.index_table(schema[-1] if schema else self.schema, index)
        return None

    def not_null_proven(self, schema: str, table: str, column: str) -> bool:
        """A validated CHECK (column IS NOT NULL) stands (PostgreSQL 12+ then skips the scan)."""
        if self.version < 120000:
            return False
        if (table, column) in self.tracker.validated_not_null:
            return True
        if self.live is None:
            return False
        return any(null_test_of(e) == column for e in self.live.check_expressions(schema, table))
