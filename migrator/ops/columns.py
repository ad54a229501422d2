"""The column vocabulary operations share: column specs, references, what a contract tightens."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from migrator.strict import Strict

Identifier = str
OnDelete = Literal["no action", "restrict", "cascade", "set null", "set default"]


class ColumnReference(Strict):
    """A column-level foreign key: ``references: {table: users, column: id}``."""

    table: Identifier
    column: Identifier = "id"
    on_delete: OnDelete | None = None


class ColumnSpec(Strict):
    """A column: ``{name, type, default, nullable, check, references, unique}``."""

    name: Identifier
    type: str = Field(description="a PostgreSQL type, as SQL: text, bigint, varchar(20)...")
    default: str | int | float | bool | None = Field(
        default=None, description="SQL expression or constant; volatile ones become a backfill"
    )
    nullable: bool = True
    check: str | None = Field(default=None, description="SQL boolean expression over the row")
    references: ColumnReference | None = None
    unique: bool = False


class TableReference(Strict):
    """The referenced side of a foreign key."""

    table: Identifier
    columns: list[Identifier] = Field(min_length=1)


class FinalColumn(Strict):
    """What add_column tightens in the contract, once the old version is gone."""

    nullable: bool | None = None
    default: str | int | float | bool | None = None
    check: str | None = None
    unique: bool | None = None
