"""The `drop_constraint` operation."""

from __future__ import annotations

from typing import ClassVar

from migrator.ops.base import Operation, Phase
from migrator.plan.types import Identifier


class DropConstraint(Operation):
    """`drop_constraint`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "drop_constraint"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"contract"})
    where_it_belongs: ClassVar[str] = (
        "dropping a constraint changes what the old version may rely on; put it under contract:"
    )
    table: Identifier
    name: Identifier
