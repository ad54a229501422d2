"""The `create_enum` operation."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from migrator.ops.base import Operation, Phase
from migrator.plan.types import Identifier


class CreateEnum(Operation):
    """`create_enum`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "create_enum"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    name: Identifier
    values: list[str] = Field(min_length=1)
