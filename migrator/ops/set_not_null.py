"""The `set_not_null` operation."""

from __future__ import annotations

from typing import ClassVar

from migrator.ops.base import Operation, Phase
from migrator.plan.types import Identifier


class SetNotNull(Operation):
    """`set_not_null`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "set_not_null"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"contract"})
    where_it_belongs: ClassVar[str] = (
        "SET NOT NULL breaks the old version while it may still write NULL; put it under contract: (add_column's final: {nullable: false} schedules it for you)"
    )
    table: Identifier
    column: Identifier
