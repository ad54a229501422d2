"""The `drop_table` operation (contract only).

Says how many rows the table holds (in the step's description, so `complete` shows it
when it schedules the drop). Views and foreign keys of other tables that rely on it are
named in a refusal; migrator never drops with CASCADE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from migrator.engine.steps import Doomed, Step, step
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.safe import lock_referenced_by_sql
from migrator.ops.validation import refuse_dependants, require_table
from migrator.sqltext import ident


class DropTable(Operation):
    """`drop_table`: only once the old version is gone."""

    op_name: ClassVar[str] = "drop_table"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"contract"})
    where_it_belongs: ClassVar[str] = "the old version still uses the table; put it under contract:"
    table: Identifier

    def describe(self) -> str:
        return f"drop table {self.table}"

    def validate_live(self, ctx: Context) -> None:
        where = f"drop_table {self.table}"
        require_table(ctx, where, self.table)
        refuse_dependants(
            where,
            f"table {self.table}",
            ctx.catalog.dependants(ctx.schema, self.table),
        )

    def contract(self, ctx: Context) -> Sequence[Step]:
        exists = ctx.catalog.table_exists(ctx.schema, self.table)
        rows = ctx.catalog.row_count(ctx.schema, self.table) if exists else 0
        what = f"drop table {self.table}, which holds {rows} row{'s' if rows != 1 else ''}"
        ctx.notes.append(what)
        # Its foreign keys go with it, under ACCESS EXCLUSIVE on each table they
        # reference: those first (safe.lock_referenced_sql), as an application writes.
        locks = lock_referenced_by_sql(ctx.catalog, ctx.schema, self.table)
        return [
            step(
                "drop-table", what, *locks, f"DROP TABLE IF EXISTS {ident(ctx.schema, self.table)}"
            )
        ]

    def doomed(self) -> Sequence[Doomed]:
        """What the old version may still use: `contract` waits until nothing does."""
        return (Doomed(self.table),)
