"""The `create_enum` operation: a new enum type, in one short transaction.

Nothing uses a new type yet, so creating it locks nothing the versions use. The
rollback drops it (after the rollbacks of later operations removed its columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.sqltext import ident, literal


class CreateEnum(Operation):
    """`create_enum`: ``CREATE TYPE name AS ENUM (values)``."""

    op_name: ClassVar[str] = "create_enum"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    name: Identifier
    values: list[str] = Field(min_length=1)

    def describe(self) -> str:
        return f"create enum {self.name}"

    def validate_live(self, ctx: Context) -> None:
        where = f"create_enum {self.name}"
        twice = sorted({v for v in self.values if self.values.count(v) > 1})
        if twice:
            raise ValidationFailed(f"{where}: value {', '.join(map(repr, twice))} listed twice")
        if (
            self.name in ctx.planned_types
            or self.name in ctx.planned_tables
            or ctx.catalog.type_kind(ctx.schema, self.name) is not None
        ):
            raise ValidationFailed(f"{where}: a type named {ctx.schema}.{self.name} already exists")
        ctx.planned_types.add(self.name)

    def expand(self, ctx: Context) -> Sequence[Step]:
        values = ", ".join(literal(v) for v in self.values)
        return [
            step(
                "create-type",
                self.describe(),
                f"CREATE TYPE {ident(ctx.schema, self.name)} AS ENUM ({values})",
            )
        ]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        return [
            step(
                "drop-type",
                f"drop enum {self.name}",
                f"DROP TYPE IF EXISTS {ident(ctx.schema, self.name)}",
            )
        ]
