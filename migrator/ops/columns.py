"""The column vocabulary operations share: column specs, references, what a contract tightens."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from migrator.sqltext import short_name
from migrator.strict import Strict

Identifier = str


def _fk_action(value: Any) -> Any:
    # PostgreSQL's own spelling in any case: CASCADE, SET NULL, set  null, No Action.
    return " ".join(value.lower().split()) if isinstance(value, str) else value


FkAction = Annotated[
    Literal["no action", "restrict", "cascade", "set null", "set default"],
    BeforeValidator(_fk_action),
]
"""A foreign key's referential action, as PostgreSQL spells it, in any case."""
OnDelete = FkAction


class ColumnReference(Strict):
    """A column-level foreign key: ``references: {table: users, column: id, name: ...}``."""

    table: Identifier
    column: Identifier = "id"
    on_delete: OnDelete | None = None
    name: Identifier | None = Field(
        default=None, description="the constraint's name (default <table>_<column>_fkey)"
    )


class NamedCheck(Strict):
    """A column's CHECK with its name: ``check: {name: price_positive, expression: "price > 0"}``."""

    name: Identifier
    expression: str = Field(description="SQL boolean expression over the row")


class NamedUnique(Strict):
    """A column's UNIQUE constraint with its name: ``unique: {name: users_email_key}``."""

    name: Identifier


def check_sql(check: str | NamedCheck | None) -> str | None:
    """The expression of a ``check:`` written either way."""
    return check.expression if isinstance(check, NamedCheck) else check


def check_name(check: str | NamedCheck | None, table: str, column: str) -> str | None:
    """The name of a column's CHECK: the one given, or PostgreSQL's <table>_<column>_check."""
    if check is None:
        return None
    return check.name if isinstance(check, NamedCheck) else short_name(table, column, "check")


def unique_name(unique: bool | NamedUnique | None, table: str, column: str) -> str | None:
    """The name of a column's UNIQUE constraint: the one given, or <table>_<column>_key."""
    if isinstance(unique, NamedUnique):
        return unique.name
    return short_name(table, column, "key") if unique else None


def reference_name(ref: ColumnReference, table: str, column: str) -> str:
    """The name of a column's foreign key: the one given, or <table>_<column>_fkey."""
    return ref.name or short_name(table, column, "fkey")


class ColumnSpec(Strict):
    """A column: ``{name, type, default, nullable, check, references, unique, comment}``."""

    name: Identifier
    type: str = Field(description="a PostgreSQL type, as SQL: text, bigint, varchar(20)...")
    default: str | int | float | bool | None = Field(
        default=None, description="SQL expression or constant; volatile ones become a backfill"
    )
    nullable: bool = True
    check: str | NamedCheck | None = Field(
        default=None, description="SQL boolean expression over the row, or {name, expression}"
    )
    references: ColumnReference | None = None
    unique: bool | NamedUnique = Field(default=False, description="true, or {name: ...}")
    comment: str | None = Field(default=None, description="COMMENT ON the column")

    @property
    def check_sql(self) -> str | None:
        """The CHECK's expression, however it was written."""
        return check_sql(self.check)


class TableReference(Strict):
    """The referenced side of a foreign key."""

    table: Identifier
    columns: list[Identifier] = Field(min_length=1)


class FinalColumn(Strict):
    """What add_column tightens in the contract, once the old version is gone."""

    nullable: bool | None = None
    default: str | int | float | bool | None = None
    check: str | NamedCheck | None = None
    unique: bool | NamedUnique | None = None
