"""The `drop_index` operation."""

from __future__ import annotations

from typing import ClassVar

from migrator.ops.base import Operation, Phase
from migrator.plan.types import Identifier


class DropIndex(Operation):
    """`drop_index`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "drop_index"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"contract"})
    where_it_belongs: ClassVar[str] = (
        "the old version's queries may rely on the index; put it under contract:"
    )
    name: Identifier
