"""The `rename_table` operation."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from migrator.ops.base import Operation, Phase
from migrator.plan.types import Identifier


class RenameTable(Operation):
    """`rename_table`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "rename_table"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    from_: Identifier = Field(alias="from")
    to: Identifier
