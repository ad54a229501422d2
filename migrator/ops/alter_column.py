"""The `alter_column` operation."""

from __future__ import annotations

from typing import ClassVar

from migrator.ops.base import Operation, Phase
from migrator.plan.types import ColumnReference, Identifier


class AlterColumn(Operation):
    """`alter_column`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "alter_column"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    column: Identifier
    type: str | None = None
    up: str | None = None
    down: str | None = None
    nullable: bool | None = None
    default: str | int | float | bool | None = None
    check: str | None = None
    unique: bool | None = None
    references: ColumnReference | None = None
