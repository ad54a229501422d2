"""The `add_foreign_key` operation."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from migrator.ops.base import Operation, Phase
from migrator.plan.types import Identifier, OnDelete, TableReference


class AddForeignKey(Operation):
    """`add_foreign_key`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "add_foreign_key"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    name: Identifier
    columns: list[Identifier] = Field(min_length=1)
    references: TableReference
    on_delete: OnDelete | None = None
