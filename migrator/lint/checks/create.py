"""CREATE TABLE, CREATE TABLE AS, views and sequences: what the plan creates is new.

Statements on a table created earlier in the same plan or file are not held to the
locking rules; this module records those tables, and applies the column-type rules
(M017, M026, M034, M035, M036) and M030 to CREATE TABLE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pglast import ast, enums

from migrator.lint.checks.columns import column_type_rules, key_columns, key_type_rules
from migrator.lint.model import LintPhase, Stmt, Unit, UnitState, rel
from migrator.lint.registry import on

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer

OT = enums.ObjectType


@on(ast.CreateStmt)
def create_table(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """The table and its columns are new; rules 17, 26 and 30."""
    node = stmt.node
    assert isinstance(node, ast.CreateStmt)
    table = rel(node.relation)
    a.tracker.tables.add(table)
    if node.relation is not None and node.relation.relpersistence == "t":
        a.tracker.temp_tables.add(table)
    for element in node.tableElts or ():
        if isinstance(element, ast.ColumnDef):
            colname = element.colname or ""
            a.tracker.columns.add((table, colname))
            if element.typeName is not None:
                a.tracker.column_types[(table, colname)] = element.typeName
            column_type_rules(a, stmt, table, element)
    columns = [e for e in node.tableElts or () if isinstance(e, ast.ColumnDef)]
    constraints = [e for e in node.tableElts or () if isinstance(e, ast.Constraint)]
    key_type_rules(a, stmt, table, key_columns(columns, constraints))
    # A temporary table dropped at commit is gone when its statement ends: it reruns.
    dropped_at_commit = (
        node.relation is not None
        and node.relation.relpersistence == "t"
        and node.oncommit == enums.OnCommitAction.ONCOMMIT_DROP
    )
    if not unit.transactional and not node.if_not_exists and not dropped_at_commit:
        a.not_rerunnable(stmt, f"CREATE TABLE {table} without IF NOT EXISTS")


@on(ast.CreateTableAsStmt)
def create_table_as(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """The table (or materialized view) is new."""
    node = stmt.node
    assert isinstance(node, ast.CreateTableAsStmt)
    if node.into is not None and node.into.rel is not None:
        a.tracker.tables.add(rel(node.into.rel))
        if node.objtype == OT.OBJECT_MATVIEW:
            a.tracker.matviews.add(rel(node.into.rel))


@on(ast.ViewStmt)
def create_view(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """A view: new unless replaced; a view of a renamed table's old name answers M020."""
    node = stmt.node
    assert isinstance(node, ast.ViewStmt)
    if node.view is not None:
        state.views.add(rel(node.view))
        if not node.replace:
            a.tracker.tables.add(rel(node.view))


@on(ast.CreateSeqStmt)
def create_sequence(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """A sequence is a relation that ALTER TABLE ... OWNER TO may name: it is new."""
    node = stmt.node
    assert isinstance(node, ast.CreateSeqStmt)
    a.tracker.tables.add(rel(node.sequence))
