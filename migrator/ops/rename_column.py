"""The `rename_column` operation."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from migrator.ops.base import Operation, Phase
from migrator.plan.types import Identifier


class RenameColumn(Operation):
    """`rename_column`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "rename_column"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    from_: Identifier = Field(alias="from")
    to: Identifier
