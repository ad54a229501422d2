"""Transaction control in a step's SQL: rule M031 (a raw file's blocks are judged where
its units are built, in `migrator.lint.sources`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pglast import ast, enums

from migrator.lint.model import LintPhase, Stmt, Unit, UnitState
from migrator.lint.registry import on

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer

TK = enums.TransactionStmtKind


@on(ast.TransactionStmt)
def transaction_control(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 31: BEGIN, COMMIT or ROLLBACK inside a step migrator manages."""
    node = stmt.node
    assert isinstance(node, ast.TransactionStmt)
    if not a.managed:
        return  # a raw file's own blocks are judged where the units are built
    if node.kind in (TK.TRANS_STMT_SAVEPOINT, TK.TRANS_STMT_RELEASE, TK.TRANS_STMT_ROLLBACK_TO):
        return
    word = stmt.sql.split(None, 1)[0].upper() if stmt.sql.strip() else "BEGIN"
    if node.kind in (TK.TRANS_STMT_BEGIN, TK.TRANS_STMT_START):
        why = (
            "is nested inside the step's transaction (PostgreSQL ignores it)"
            if unit.transactional
            else "opens a transaction migrator does not manage"
        )
    else:
        why = (
            "ends the step's transaction early: what follows runs outside it and the step "
            "is no longer recorded atomically"
            if unit.transactional
            else "ends a transaction migrator does not manage"
        )
    a.report("M031", stmt, f"{word} {why}")
