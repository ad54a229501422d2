"""The `drop_table` operation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from migrator.ops.base import Doomed, Operation, Phase
from migrator.plan.types import Identifier


class DropTable(Operation):
    """`drop_table`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "drop_table"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"contract"})
    where_it_belongs: ClassVar[str] = "the old version still uses the table; put it under contract:"
    table: Identifier

    def doomed(self) -> Sequence[Doomed]:
        return (Doomed(self.table),)
