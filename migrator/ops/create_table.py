"""The `create_table` operation."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from migrator.ops.base import Operation, Phase
from migrator.plan.types import ColumnSpec, Identifier, OnDelete, Strict, TableReference


class ForeignKeyConstraint(Strict):
    """``foreign_key: {columns, references: {table, columns}, on_delete}``."""

    columns: list[Identifier] = Field(min_length=1)
    references: TableReference
    on_delete: OnDelete | None = None


class TableConstraint(Strict):
    """A named table constraint: exactly one of check, unique, foreign_key."""

    name: Identifier
    check: str | None = None
    unique: list[Identifier] | None = None
    foreign_key: ForeignKeyConstraint | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TableConstraint:
        kinds = [k for k in ("check", "unique", "foreign_key") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a constraint takes exactly one of check, unique, foreign_key")
        return self


class CreateTable(Operation):
    """`create_table`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "create_table"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    columns: list[ColumnSpec] = Field(min_length=1)
    primary_key: list[Identifier] | None = None
    constraints: list[TableConstraint] = Field(default_factory=list)
