"""The `add_enum_value` operation.

ALTER TYPE ... ADD VALUE IF NOT EXISTS, in an autocommit block: before PostgreSQL 12
it fails inside a transaction, and since then a value added in a transaction cannot be
used until it commits. IF NOT EXISTS makes a rerun harmless. Values are never renamed
or reordered (that would change the sort order the old version sees).

PostgreSQL cannot drop an enum value, so the rollback leaves it in place and says so;
an unused extra value does not disturb the old version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.sqltext import ident, literal


class AddEnumValue(Operation):
    """`add_enum_value`: one more label, optionally BEFORE or AFTER an existing one."""

    op_name: ClassVar[str] = "add_enum_value"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    type: Identifier
    value: str
    before: str | None = None
    after: str | None = None

    def describe(self) -> str:
        return f"add value {self.value!r} to enum {self.type}"

    def validate_live(self, ctx: Context) -> None:
        where = f"add_enum_value {self.type} {self.value!r}"
        if self.before is not None and self.after is not None:
            raise ValidationFailed(f"{where}: give before or after, not both")
        if self.type in ctx.planned_types:
            raise ValidationFailed(
                f"{where}: {self.type} is created by this plan; list the value in create_enum"
            )
        kind = ctx.catalog.type_kind(ctx.schema, self.type)
        if kind is None:
            raise ValidationFailed(f"{where}: type {ctx.schema}.{self.type} does not exist")
        if kind != "e":
            raise ValidationFailed(f"{where}: type {ctx.schema}.{self.type} is not an enum")
        labels = ctx.catalog.enum_values(ctx.schema, self.type)
        for key, anchor in (("before", self.before), ("after", self.after)):
            if anchor is not None and anchor not in labels:
                raise ValidationFailed(
                    f"{where}: {key}: {self.type} has no value {anchor!r} "
                    f"(it has {', '.join(repr(x) for x in labels)})"
                )
        if self.value in labels:
            # Left by an earlier run (values cannot be dropped): IF NOT EXISTS keeps it.
            ctx.notes.append(f"{where}: the value is already there; nothing to add")

    def expand(self, ctx: Context) -> Sequence[Step]:
        sql = (
            f"ALTER TYPE {ident(ctx.schema, self.type)} "
            f"ADD VALUE IF NOT EXISTS {literal(self.value)}"
        )
        if self.before is not None:
            sql += f" BEFORE {literal(self.before)}"
        elif self.after is not None:
            sql += f" AFTER {literal(self.after)}"
        return [step("add-value", self.describe(), sql, autocommit=True)]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        ctx.notes.append(
            f"add_enum_value {self.type} {self.value!r}: PostgreSQL cannot drop an enum value; "
            "it stays (unused by the old version)"
        )
        return []
