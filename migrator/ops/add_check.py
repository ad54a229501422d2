"""The `add_check` operation."""

from __future__ import annotations

from typing import ClassVar

from migrator.ops.base import Operation, Phase
from migrator.plan.types import Identifier


class AddCheck(Operation):
    """`add_check`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "add_check"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    name: Identifier
    expression: str
