"""The `drop_column` operation.

DROP COLUMN takes ACCESS EXCLUSIVE only for the catalog change (no rewrite). Anything
that uses the column (a view, an index, a constraint, a trigger, a foreign key from
another table) is named in a refusal before anything runs: PostgreSQL would drop
indexes and constraints silently and needs CASCADE for the rest; migrator does neither.

Under `contract:` it runs once the old version is gone. Under `expand:` it takes
``down``, an SQL expression over the row: from the expand on, a BEFORE INSERT OR UPDATE
trigger gives the column ``down``'s value wherever a write leaves it NULL (the new
version, which no longer writes it), so the old version still reads a value and a NOT
NULL column does not refuse the new version's inserts. The contract drops the trigger
and the column; the rollback drops the trigger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.engine.steps import Doomed, Step, step
from migrator.ops.base import ChangedColumn, Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.expressions import column_refs, row_variables, trigger_function_sql
from migrator.ops.validation import (
    refuse_dependants,
    require_columns,
    require_expression,
    require_table,
)
from migrator.sqltext import ident, private_function_sql, short_name


class DropColumn(Operation):
    """`drop_column`: under contract, or under expand with ``down`` for the old version."""

    op_name: ClassVar[str] = "drop_column"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand", "contract"})
    where_it_belongs: ClassVar[str] = (
        "the old version still reads and writes the column; put it under contract:, which runs once the old version is gone"
    )
    table: Identifier
    column: Identifier
    down: str | None = Field(
        default=None,
        description="under expand: SQL expression over the row giving the column its value "
        "where the new version leaves it NULL, while the old version still reads it",
    )

    def describe(self) -> str:
        return f"drop column {self.table}.{self.column}"

    def placement_error(self, phase: Phase) -> str | None:
        if phase == "expand" and self.down is None:
            return (
                "drop_column cannot stand under expand: without down (it belongs under "
                f"contract:): {self.where_it_belongs}; or give `down` for the old version"
            )
        if phase == "contract" and self.down is not None:
            return (
                "drop_column: down keeps the column filled for the old version while both "
                "run; under contract: the old version is gone; put it under expand:"
            )
        return None

    def column_changes(self) -> Sequence[ChangedColumn]:
        return (ChangedColumn(self.table, self.column, "drop", "dropped", "contract"),)

    def trigger_name(self) -> str:
        """The trigger filling the column with ``down``."""
        return short_name(self.column, "down", prefix="_migrator_")

    def function_name(self, ctx: Context) -> str:
        """The trigger function, in migrator's own schema."""
        return ident("migrator", short_name(ctx.schema, self.table, self.column, "down"))

    def validate_live(self, ctx: Context) -> None:
        where = f"drop_column {self.table}.{self.column}"
        require_table(ctx, where, self.table)
        require_columns(ctx, where, self.table, [self.column])
        refuse_dependants(
            where,
            f"column {self.table}.{self.column}",
            [
                d
                for d in ctx.catalog.dependants(ctx.schema, self.table, self.column)
                if not d.startswith(f"trigger {self.trigger_name()} ")  # our own, on a rerun
            ],
        )
        if self.down is not None:
            column = ctx.catalog.column(ctx.schema, self.table, self.column)
            assert column is not None  # require_columns found it
            require_expression(ctx, f"{where}: down", self.table, self.down, column.type)

    def expand(self, ctx: Context) -> Sequence[Step]:
        if self.down is None:
            return super().expand(ctx)
        t = ident(ctx.schema, self.table)
        col = ident(self.column)
        types = {c.name: c.type for c in ctx.catalog.columns(ctx.schema, self.table)}
        reads = [c for c in column_refs(self.down) if c in types and c != self.column]
        function = self.function_name(ctx)
        trigger = ident(self.trigger_name())
        return [
            step(
                "down-trigger",
                f"{self.table}.{self.column} filled with down where a write leaves it NULL",
                trigger_function_sql(
                    function,
                    row_variables(reads, types),
                    f"  NEW.{col} := ({self.down});\n  RETURN NEW;\n",
                ),
                private_function_sql(function),
                f"DROP TRIGGER IF EXISTS {trigger} ON {t}",
                f"CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW "
                f"WHEN (NEW.{col} IS NULL) EXECUTE FUNCTION {function}()",
            )
        ]

    def _drop_trigger_sql(self, ctx: Context) -> list[str]:
        if self.down is None:
            return []
        t = ident(ctx.schema, self.table)
        return [
            f"DROP TRIGGER IF EXISTS {ident(self.trigger_name())} ON {t}",
            f"DROP FUNCTION IF EXISTS {self.function_name(ctx)}()",
        ]

    def contract(self, ctx: Context) -> Sequence[Step]:
        return [
            step(
                "drop-column",
                self.describe(),
                *self._drop_trigger_sql(ctx),
                f"ALTER TABLE {ident(ctx.schema, self.table)} DROP COLUMN IF EXISTS "
                f"{ident(self.column)}",
            )
        ]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        if self.down is None:
            return ()
        return [step("drop-down-trigger", "drop the down trigger", *self._drop_trigger_sql(ctx))]

    def doomed(self) -> Sequence[Doomed]:
        """What the old version may still use: `contract` waits until nothing does."""
        return (Doomed(self.table, self.column),)
