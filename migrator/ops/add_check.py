"""The `add_check` operation.

The expand adds the CHECK NOT VALID (a brief ACCESS EXCLUSIVE for the catalog change,
no scan); rows written from then on are checked. The contract validates it in its own
transaction (SHARE UPDATE EXCLUSIVE: reads and writes go on during the scan). The
rollback drops it.

With ``column`` and ``up``, the rows that violate the check (the expression is false,
not NULL) are rewritten in the backfill, ``SET column = up`` batch by batch, before the
contract validates the check. New writes are checked from the expand on, as without
``up``: an ``up`` that still violates the check fails the backfill's batch, named.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field, model_validator

from migrator.engine.steps import BackfillSpec, Step
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.safe import add_check_step, drop_constraint_step, validate_step
from migrator.ops.validation import (
    refuse_constraint_clash,
    require_columns,
    require_expression,
    require_table,
)


class AddCheck(Operation):
    """`add_check`: NOT VALID now, VALIDATE in the contract."""

    op_name: ClassVar[str] = "add_check"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    name: Identifier
    expression: str
    column: Identifier | None = Field(default=None, description="the column up rewrites")
    up: str | None = Field(
        default=None,
        description="SQL expression: the new value of column in rows the check rejects",
    )

    @model_validator(mode="after")
    def _up_with_column(self) -> AddCheck:
        if (self.up is None) != (self.column is None):
            raise ValueError("column and up go together: up rewrites column where the check fails")
        return self

    def describe(self) -> str:
        return f"check {self.name} on {self.table}"

    def backfills(self, ctx: Context) -> Sequence[BackfillSpec]:
        if self.up is None or self.column is None:
            return ()
        return (
            BackfillSpec(
                key="fix-rows",
                schema=ctx.schema,
                table=self.table,
                set={self.column: self.up},
                # A CHECK rejects only false; NULL passes.
                needs=f"({self.expression}) IS FALSE",
                description=f"rewrite {self.table}.{self.column} where {self.name} fails",
            ),
        )

    def validate_live(self, ctx: Context) -> None:
        where = f"add_check {self.name}"
        require_table(ctx, where, self.table)
        require_expression(ctx, f"{where}: expression", self.table, self.expression, "boolean")
        if self.up is not None and self.column is not None:
            require_columns(ctx, where, self.table, [self.column])
            require_expression(ctx, f"{where}: up", self.table, self.up)
        refuse_constraint_clash(ctx, where, self.table, self.name)

    def expand(self, ctx: Context) -> Sequence[Step]:
        return [add_check_step("add-check", ctx.schema, self.table, self.name, self.expression)]

    def contract(self, ctx: Context) -> Sequence[Step]:
        return [validate_step("validate-check", ctx.schema, self.table, self.name)]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        return [drop_constraint_step("drop-check", ctx.schema, self.table, self.name)]
