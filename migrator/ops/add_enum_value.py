"""The `add_enum_value` operation."""

from __future__ import annotations

from typing import ClassVar

from migrator.ops.base import Operation, Phase
from migrator.plan.types import Identifier


class AddEnumValue(Operation):
    """`add_enum_value`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "add_enum_value"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    type: Identifier
    value: str
    before: str | None = None
    after: str | None = None
