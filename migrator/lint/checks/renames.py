"""Renames in place: rules M019 (column) and M020 (table without a view)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pglast import ast, enums

from migrator.lint.model import LintPhase, Stmt, Unit, UnitState, rel
from migrator.lint.registry import at_unit_end, on

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer

OT = enums.ObjectType


@on(ast.RenameStmt)
def rename(a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None) -> None:
    """Rule 19 for RENAME COLUMN; a renamed table is judged at the transaction's end."""
    node = stmt.node
    assert isinstance(node, ast.RenameStmt)
    if node.relation is None:
        return
    table = rel(node.relation)
    if node.renameType == OT.OBJECT_COLUMN and node.relationType == OT.OBJECT_TABLE:
        old, new = node.subname or "", node.newname or ""
        if a.new(table) or (table, old) in a.tracker.columns:
            a.tracker.columns.add((table, new))
            return
        if (table, new) in state.dropped_columns:
            # The swap: the column of the new name went in this same transaction, so
            # no query sees a moment without it (rename_column's contract).
            return
        a.report(
            "M019",
            stmt,
            f"renames {table}.{old} to {new} in place: every query using {old} breaks at once",
        )
    elif node.renameType == OT.OBJECT_TABCONSTRAINT:
        # A foreign key the file added goes on under its new name (the swap gives a
        # re-pointed key its name back); the old name is gone.
        before, after = (table, node.subname or ""), (table, node.newname or "")
        tracker = a.tracker
        added = before in tracker.foreign_key_targets or before in tracker.foreign_key_columns
        for known in (tracker.foreign_key_targets, tracker.foreign_key_columns):
            if before in known:
                known[after] = known.pop(before)  # type: ignore[assignment]
        if before in tracker.foreign_keys:
            tracker.foreign_keys.discard(before)
            tracker.foreign_keys.add(after)
        if added:
            # Gone under that name. A key the database has is left alone: it stands,
            # renamed, and goes with a DROP COLUMN of its column all the same.
            tracker.dropped_constraints.add(before)
    elif node.renameType == OT.OBJECT_TABLE:
        new_name = node.newname or ""
        if a.new(table):
            a.tracker.tables.discard(table)
            a.tracker.tables.add(new_name)
            return
        state.renamed_tables.append((table, stmt))


@at_unit_end
def renamed_table_without_view(a: Analyzer, state: UnitState) -> None:
    """Rule 20: a table renamed with no view of its old name in the same transaction."""
    for old, stmt in state.renamed_tables:
        if old not in state.views:
            a.report(
                "M020",
                stmt,
                f"renames table {old} in place with no view named {old} created in the "
                "same transaction: the old version's queries break at once",
            )
