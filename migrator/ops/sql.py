"""The `sql` operation: raw SQL for what the catalogue lacks, linted like any statement."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from migrator.ops.base import Operation, Phase


class RawSql(Operation):
    """`sql`: SQL text for the expand, the contract and the rollback."""

    op_name: ClassVar[str] = "sql"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand", "contract"})

    expand_sql: str | None = Field(default=None, alias="expand")
    contract_sql: str | None = Field(default=None, alias="contract")
    rollback_sql: str | None = Field(default=None, alias="rollback")
