"""The `drop_constraint` operation.

Under `contract:` (the old version gone): a brief ACCESS EXCLUSIVE on the table for the
catalog change. A primary key or unique constraint that foreign keys of other tables
rely on is refused with them named; migrator never drops with CASCADE.

Under `expand:` with ``column`` and ``up`` / ``down``, for a CHECK, UNIQUE or FOREIGN
KEY over that column whose data must stay consistent while both versions run: the new
version may write values the constraint forbids, the old version still relies on it.
The column gets a shadow of the same type without the constraint, kept in step by the
sync trigger (`migrator.ops.shadow`): what the new version writes to the shadow reaches
the old column through ``down``, which must give a value the constraint accepts; what
the old version writes reaches the shadow through ``up`` (default: the value as it
is). The backfill fills the shadow; the contract swaps it in, every other constraint,
index and default carried over, the dropped one left behind (`alter_column`'s swap).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.engine.catalog_columns import (
    column_constraints,
    column_facts,
    column_indexes,
    foreign_key_target,
)
from migrator.engine.steps import BackfillSpec, Step
from migrator.errors import ValidationFailed
from migrator.ops.alter_column import AlterColumn
from migrator.ops.base import ChangedColumn, Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.safe import drop_constraint_step, drop_foreign_key_step
from migrator.ops.validation import refuse_dependants, require_table


class DropConstraint(Operation):
    """`drop_constraint`: under contract, or under expand with column and up / down."""

    op_name: ClassVar[str] = "drop_constraint"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand", "contract"})
    where_it_belongs: ClassVar[str] = (
        "dropping a constraint changes what the old version may rely on; put it under "
        "contract:, or give column and down for the old version"
    )
    table: Identifier
    name: Identifier
    column: Identifier | None = Field(
        default=None, description="under expand: the column the constraint is over"
    )
    up: str | None = Field(
        default=None,
        description="under expand: the old column's value as the new version reads it "
        "(default: as it is)",
    )
    down: str | None = Field(
        default=None,
        description="under expand: the new version's value as the old version reads it; "
        "must satisfy the constraint",
    )

    def describe(self) -> str:
        return f"drop constraint {self.name} on {self.table}"

    def _kept_consistent(self) -> bool:
        return self.up is not None or self.down is not None

    def placement_error(self, phase: Phase) -> str | None:
        if phase == "expand" and (self.column is None or self.down is None):
            return (
                "drop_constraint cannot stand under expand: without column and down (it "
                f"belongs under contract:): {self.where_it_belongs}"
            )
        if phase == "contract" and (self._kept_consistent() or self.column is not None):
            return (
                "drop_constraint: column, up and down keep the data consistent while both "
                "versions run; under contract: the old version is gone; put it under expand:"
            )
        return None

    def _alter(self) -> AlterColumn:
        assert self.column is not None
        alter = AlterColumn(table=self.table, column=self.column, up=self.up, down=self.down)
        return alter.dropping(self.name)

    def column_changes(self) -> Sequence[ChangedColumn]:
        return self._alter().column_changes() if self.column is not None else ()

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
        if self.column is None:
            return
        if found.kind not in ("c", "f", "u"):
            raise ValidationFailed(
                f"{where}: up and down keep a CHECK, UNIQUE or FOREIGN KEY consistent; "
                f"{self.name} is none of them; drop it under contract:"
            )
        facts = column_facts(ctx.catalog, ctx.schema, self.table, self.column)
        if facts is None:
            raise ValidationFailed(f"{where}: {self.table} has no column {self.column}")
        over = {c.name for c in column_constraints(ctx.catalog, facts) if not c.incoming}
        over |= {i.constraint for i in column_indexes(ctx.catalog, facts) if i.constraint}
        if self.name not in over:
            raise ValidationFailed(f"{where}: {self.name} does not use column {self.column}")
        self._alter().validate_live(ctx)

    def expand(self, ctx: Context) -> Sequence[Step]:
        if self.column is None:
            return super().expand(ctx)
        return self._alter().expand(ctx)

    def backfills(self, ctx: Context) -> Sequence[BackfillSpec]:
        return self._alter().backfills(ctx) if self.column is not None else ()

    def contract(self, ctx: Context) -> Sequence[Step]:
        if self.column is not None:
            return self._alter().contract(ctx)
        references = foreign_key_target(ctx.catalog, ctx.schema, self.table, self.name)
        if references is not None:
            # ACCESS EXCLUSIVE on the table it references too: that one first.
            return [
                drop_foreign_key_step(
                    "drop-constraint",
                    ctx.schema,
                    self.table,
                    self.name,
                    references,
                    catalog=ctx.catalog,
                )
            ]
        return [drop_constraint_step("drop-constraint", ctx.schema, self.table, self.name)]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        return self._alter().rollback(ctx) if self.column is not None else ()
