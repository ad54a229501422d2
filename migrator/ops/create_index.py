"""The `create_index` operation."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from migrator.ops.base import Operation, Phase
from migrator.plan.types import Identifier


class CreateIndex(Operation):
    """`create_index`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "create_index"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    name: Identifier
    columns: list[str] = Field(min_length=1)
    unique: bool = False
    method: Literal["btree", "hash", "gist", "spgist", "gin", "brin"] = "btree"
    where: str | None = None
    include: list[Identifier] = Field(default_factory=list)
