"""The `add_unique` operation."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from migrator.ops.base import Operation, Phase
from migrator.plan.types import Identifier


class AddUnique(Operation):
    """`add_unique`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "add_unique"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    name: Identifier
    columns: list[Identifier] = Field(min_length=1)
