"""The `drop_constraint` operation (contract only).

A brief ACCESS EXCLUSIVE on the table for the catalog change. A primary key or unique
constraint that foreign keys of other tables rely on is refused with them named;
migrator never drops with CASCADE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from migrator.engine.steps import Step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.safe import drop_constraint_step
from migrator.ops.validation import refuse_dependants, require_table


class DropConstraint(Operation):
    """`drop_constraint`: once the old version is gone."""

    op_name: ClassVar[str] = "drop_constraint"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"contract"})
    where_it_belongs: ClassVar[str] = (
        "dropping a constraint changes what the old version may rely on; put it under contract:"
    )
    table: Identifier
    name: Identifier

    def describe(self) -> str:
        return f"drop constraint {self.name} on {self.table}"

    def validate_live(self, ctx: Context) -> None:
        where = f"drop_constraint {self.table}.{self.name}"
        require_table(ctx, where, self.table)
        found = ctx.catalog.constraint(ctx.schema, self.table, self.name)
        if found is None:
            raise ValidationFailed(f"{where}: {self.table} has no constraint named {self.name}")
        if found.index is not None and found.kind in ("p", "u", "x"):
            refuse_dependants(
                where,
                f"constraint {self.name}",
                [
                    d
                    for d in ctx.catalog.index_dependants(ctx.schema, found.index)
                    if not d.startswith(f"constraint {self.name} ")
                ],
            )

    def contract(self, ctx: Context) -> Sequence[Step]:
        return [drop_constraint_step("drop-constraint", ctx.schema, self.table, self.name)]
