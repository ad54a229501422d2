"""The `add_check` operation.

The expand adds the CHECK NOT VALID (a brief ACCESS EXCLUSIVE for the catalog change,
no scan); rows written from then on are checked. The contract validates it in its own
transaction (SHARE UPDATE EXCLUSIVE: reads and writes go on during the scan). The
rollback drops it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from migrator.engine.steps import Step
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.safe import add_check_step, drop_constraint_step, validate_step
from migrator.ops.validation import refuse_constraint_clash, require_expression, require_table


class AddCheck(Operation):
    """`add_check`: NOT VALID now, VALIDATE in the contract."""

    op_name: ClassVar[str] = "add_check"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    name: Identifier
    expression: str

    def describe(self) -> str:
        return f"check {self.name} on {self.table}"

    def validate_live(self, ctx: Context) -> None:
        where = f"add_check {self.name}"
        require_table(ctx, where, self.table)
        require_expression(ctx, f"{where}: expression", self.table, self.expression, "boolean")
        refuse_constraint_clash(ctx, where, self.table, self.name)

    def expand(self, ctx: Context) -> Sequence[Step]:
        return [add_check_step("add-check", ctx.schema, self.table, self.name, self.expression)]

    def contract(self, ctx: Context) -> Sequence[Step]:
        return [validate_step("validate-check", ctx.schema, self.table, self.name)]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        return [drop_constraint_step("drop-check", ctx.schema, self.table, self.name)]
