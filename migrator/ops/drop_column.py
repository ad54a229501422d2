"""The `drop_column` operation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from migrator.ops.base import Doomed, Operation, Phase
from migrator.plan.types import Identifier


class DropColumn(Operation):
    """`drop_column`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "drop_column"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"contract"})
    where_it_belongs: ClassVar[str] = (
        "the old version still reads and writes the column; put it under contract:, which runs once the old version is gone"
    )
    table: Identifier
    column: Identifier

    def doomed(self) -> Sequence[Doomed]:
        return (Doomed(self.table, self.column),)
