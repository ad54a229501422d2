"""The `drop_column` operation (contract only).

DROP COLUMN takes ACCESS EXCLUSIVE only for the catalog change (no rewrite). Anything
that uses the column (a view, an index, a constraint, a trigger, a foreign key from
another table) is named in a refusal before anything runs: PostgreSQL would drop
indexes and constraints silently and needs CASCADE for the rest; migrator does neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from migrator.engine.steps import Doomed, Step, step
from migrator.ops.base import ChangedColumn, Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.validation import refuse_dependants, require_columns, require_table
from migrator.sqltext import ident


class DropColumn(Operation):
    """`drop_column`: only once the old version is gone."""

    op_name: ClassVar[str] = "drop_column"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"contract"})
    where_it_belongs: ClassVar[str] = (
        "the old version still reads and writes the column; put it under contract:, which runs once the old version is gone"
    )
    table: Identifier
    column: Identifier

    def describe(self) -> str:
        return f"drop column {self.table}.{self.column}"

    def column_changes(self) -> Sequence[ChangedColumn]:
        return (ChangedColumn(self.table, self.column, "drop", "dropped", "contract"),)

    def validate_live(self, ctx: Context) -> None:
        where = f"drop_column {self.table}.{self.column}"
        require_table(ctx, where, self.table)
        require_columns(ctx, where, self.table, [self.column])
        refuse_dependants(
            where,
            f"column {self.table}.{self.column}",
            ctx.catalog.dependants(ctx.schema, self.table, self.column),
        )

    def contract(self, ctx: Context) -> Sequence[Step]:
        return [
            step(
                "drop-column",
                self.describe(),
                f"ALTER TABLE {ident(ctx.schema, self.table)} DROP COLUMN IF EXISTS "
                f"{ident(self.column)}",
            )
        ]

    def doomed(self) -> Sequence[Doomed]:
        """What the old version may still use: `contract` waits until nothing does."""
        return (Doomed(self.table, self.column),)
