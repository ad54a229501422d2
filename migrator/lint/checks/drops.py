"""DROP TABLE, DROP DATABASE and the other DROPs (DROP INDEX is in `indexes`): rules
M022, M030 and M037."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pglast import ast, enums

from migrator.lint.model import LintPhase, Stmt, Unit, UnitState, names
from migrator.lint.registry import on

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer

OT = enums.ObjectType


@on(ast.DropStmt)
def drop(a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None) -> None:
    """Rule 22 for DROP TABLE; rule 30 for any DROP but DROP INDEX."""
    node = stmt.node
    assert isinstance(node, ast.DropStmt)
    if node.removeType == OT.OBJECT_INDEX:
        return
    if node.removeType == OT.OBJECT_TABLE:
        for parts in (names(o) for o in node.objects or () if isinstance(o, tuple | list)):
            drop_table(a, stmt, parts, phase)
        if not unit.transactional and not node.missing_ok:
            a.not_rerunnable(stmt, "DROP TABLE without IF EXISTS")
    elif not unit.transactional and not node.missing_ok:
        a.not_rerunnable(stmt, "DROP without IF EXISTS")


def drop_table(a: Analyzer, stmt: Stmt, parts: list[str], phase: LintPhase | None) -> None:
    """Rule 22: a table dropped outside the contract, or one that still holds rows."""
    table = parts[-1]
    schema = parts[-2] if len(parts) > 1 else a.schema
    if a.new(table):
        return
    if phase == "contract":
        rows = a.live.row_count(schema, table) if a.live is not None else None
        if rows:
            a.report(
                "M022",
                stmt,
                f"drops {schema}.{table}, which holds {rows} rows: they are gone for good "
                "(archive them first, then suppress this with the reason)",
                "warning",
            )
        return
    where = {
        "expand": "in the expand, while the old version still uses it",
        "rollback": "in a rollback, though the plan did not create it",
        None: "outside a contract step",
    }[phase]
    rows = a.live.row_count(schema, table) if a.live is not None else None
    held = f" ({rows} rows)" if rows is not None else ""
    a.report(
        "M022",
        stmt,
        f"drops table {table}{held} {where}",
        "error" if phase else "warning",
    )


@on(ast.DropdbStmt)
def drop_database(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 37: DROP DATABASE."""
    node = stmt.node
    assert isinstance(node, ast.DropdbStmt)
    a.report(
        "M037",
        stmt,
        f"DROP DATABASE {node.dbname}: every table and row in it is gone, with no rollback",
    )
