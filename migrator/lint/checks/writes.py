"""Data changes in a migration: rules M023 (TRUNCATE, UPDATE or DELETE of every row) and
M038 (a column assigned twice in one UPDATE)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pglast import ast

from migrator.lint.model import LintPhase, Stmt, Unit, UnitState, rel
from migrator.lint.registry import on

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer


@on(ast.TruncateStmt)
def truncate(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 23: TRUNCATE of an existing table."""
    node = stmt.node
    assert isinstance(node, ast.TruncateStmt)
    tables = [rel(r) for r in node.relations or () if not a.new(r.relname)]
    if tables:
        a.report("M023", stmt, f"TRUNCATE of {', '.join(tables)} in a migration")


# Every statement: an UPDATE or DELETE may sit inside a WITH of any statement.
@on(ast.Node, stage="after")
def unbounded_writes(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 23: UPDATE or DELETE without WHERE, at the top or inside a WITH."""
    for node in stmt.writes:
        table = rel(node.relation)
        if node.whereClause is None and not a.new(table):
            verb = "UPDATE" if isinstance(node, ast.UpdateStmt) else "DELETE"
            a.report(
                "M023",
                stmt,
                f"{verb} of every row of {table} in one statement: row locks on the whole "
                "table until it commits",
            )


@on(ast.Node, stage="after")
def column_assigned_twice(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 38: an UPDATE that sets the same column twice (the server refuses it)."""
    for node in stmt.writes:
        if not isinstance(node, ast.UpdateStmt):
            continue
        seen: set[str] = set()
        for target in node.targetList or ():
            # SET d.x = 1, d.y = 2 sets two fields of one composite column: allowed.
            if not isinstance(target, ast.ResTarget) or target.indirection or not target.name:
                continue
            if target.name in seen:
                a.report(
                    "M038",
                    stmt,
                    f"UPDATE of {rel(node.relation)} sets {target.name} twice: PostgreSQL "
                    "refuses it (multiple assignments to same column)",
                )
                break
            seen.add(target.name)
