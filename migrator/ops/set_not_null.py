"""The `set_not_null` operation (contract only).

SET NOT NULL scans the table under ACCESS EXCLUSIVE. The contract instead adds
CHECK (col IS NOT NULL) NOT VALID, validates it in its own transaction (reads and
writes go on), then SET NOT NULL, which the validated check lets PostgreSQL 12+ do
without a scan, and drops the check: the same steps add_column's contract uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from migrator.engine.steps import Step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.safe import not_null_steps
from migrator.ops.validation import require_columns, require_table


class SetNotNull(Operation):
    """`set_not_null`: NOT NULL through a validated CHECK."""

    op_name: ClassVar[str] = "set_not_null"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"contract"})
    where_it_belongs: ClassVar[str] = (
        "SET NOT NULL breaks the old version while it may still write NULL; put it under contract: (add_column's final: {nullable: false} schedules it for you)"
    )
    table: Identifier
    column: Identifier

    def describe(self) -> str:
        return f"set {self.table}.{self.column} NOT NULL"

    def validate_live(self, ctx: Context) -> None:
        where = f"set_not_null {self.table}.{self.column}"
        require_table(ctx, where, self.table)
        require_columns(ctx, where, self.table, [self.column])
        nulls = ctx.catalog.null_count(ctx.schema, self.table, self.column)
        if nulls:
            raise ValidationFailed(
                f"{where}: {nulls} row{'s' if nulls != 1 else ''} of {self.table} hold NULL in "
                f"{self.column}; fill them (backfill.updates) before the contract"
            )

    def contract(self, ctx: Context) -> Sequence[Step]:
        col = ctx.catalog.column(ctx.schema, self.table, self.column)
        if col is not None and col.not_null:
            return []
        return not_null_steps(ctx.schema, self.table, self.column)
