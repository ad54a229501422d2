"""The column vocabulary operations share: column specs, references, what a contract tightens."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from migrator.pgtypes import identity_type
from migrator.sqltext import short_name
from migrator.strict import Strict

Identifier = str
IdentityKind = Literal["always", "by_default"]


def _fk_action(value: Any) -> Any:
    # PostgreSQL's own spelling in any case: CASCADE, SET NULL, set  null, No Action.
    return " ".join(value.lower().split()) if isinstance(value, str) else value


FkAction = Annotated[
    Literal["no action", "restrict", "cascade", "set null", "set default"],
    BeforeValidator(_fk_action),
]
"""A foreign key's referential action, as PostgreSQL spells it, in any case."""
OnDelete = FkAction


class SequenceOptions(Strict):
    """An identity column's sequence, in CREATE SEQUENCE's terms:
    ``{start, increment, minvalue, maxvalue, cache, cycle}``."""

    start: int | None = None
    increment: int | None = None
    minvalue: int | None = None
    maxvalue: int | None = None
    cache: int | None = Field(default=None, ge=1)
    cycle: bool | None = None

    @field_validator("increment")
    @classmethod
    def _not_zero(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("a sequence's increment cannot be 0")
        return value

    def sql(self) -> str:
        """The options as SQL (``START WITH 10 INCREMENT BY 5 ...``); empty for none."""
        parts = []
        if self.start is not None:
            parts.append(f"START WITH {self.start}")
        if self.increment is not None:
            parts.append(f"INCREMENT BY {self.increment}")
        if self.minvalue is not None:
            parts.append(f"MINVALUE {self.minvalue}")
        if self.maxvalue is not None:
            parts.append(f"MAXVALUE {self.maxvalue}")
        if self.cache is not None:
            parts.append(f"CACHE {self.cache}")
        if self.cycle is not None:
            parts.append("CYCLE" if self.cycle else "NO CYCLE")
        return " ".join(parts)


class FkOptions(Strict):
    """What a foreign key does and when it checks: ``on_delete``, ``on_update``,
    ``match`` (simple | full), ``deferrable``, ``initially_deferred``."""

    on_delete: OnDelete | None = None
    on_update: FkAction | None = None
    match: Literal["simple", "full"] | None = Field(
        default=None, description="MATCH SIMPLE (default) or FULL, for several columns"
    )
    deferrable: bool = False
    initially_deferred: bool = Field(
        default=False, description="checked at COMMIT unless SET CONSTRAINTS (needs deferrable)"
    )

    @model_validator(mode="after")
    def _deferred_needs_deferrable(self) -> FkOptions:
        if self.initially_deferred and not self.deferrable:
            raise ValueError("initially_deferred: true needs deferrable: true")
        return self

    def fk_sql(self) -> str:
        """What follows REFERENCES t (c): `` MATCH FULL ON DELETE CASCADE ... DEFERRABLE``."""
        sql = f" MATCH {self.match.upper()}" if self.match else ""
        if self.on_delete:
            sql += f" ON DELETE {self.on_delete.upper()}"
        if self.on_update:
            sql += f" ON UPDATE {self.on_update.upper()}"
        if self.deferrable:
            sql += " DEFERRABLE"
            if self.initially_deferred:
                sql += " INITIALLY DEFERRED"
        return sql


class ColumnReference(FkOptions):
    """A column-level foreign key: ``references: {table: users, column: id, name: ...}``."""

    table: Identifier
    column: Identifier = "id"
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
    identity: IdentityKind | None = Field(
        default=None,
        description="always | by_default: GENERATED ... AS IDENTITY (smallint, int, bigint)",
    )
    sequence: SequenceOptions | None = Field(
        default=None, description="the identity's sequence: start, increment, minvalue..."
    )
    generated: str | None = Field(
        default=None,
        description="SQL expression over the row: a stored generated column",
    )

    @field_validator("identity")
    @classmethod
    def _identity_type(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        type_sql = info.data.get("type")
        if isinstance(type_sql, str) and identity_type(type_sql) is None:
            raise ValueError(
                f"a {type_sql} column cannot be an identity column; only smallint, "
                "integer and bigint can"
            )
        if info.data.get("default") is not None:
            raise ValueError("an identity column takes no default (its sequence is one)")
        return value

    @field_validator("sequence")
    @classmethod
    def _sequence_needs_identity(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("identity") is None:
            raise ValueError("goes with identity: always | by_default")
        return value

    @field_validator("generated")
    @classmethod
    def _generated_alone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if not value.strip():
            raise ValueError("generated: needs an SQL expression")
        if info.data.get("identity") is not None:
            raise ValueError("a column is either generated or an identity, not both")
        if info.data.get("default") is not None:
            raise ValueError("a generated column takes no default (its expression is its value)")
        return value

    @property
    def check_sql(self) -> str | None:
        """The CHECK's expression, however it was written."""
        return check_sql(self.check)

    def generated_sql(self) -> str:
        """What follows the type in a column definition: identity or generation, or ''."""
        if self.identity is not None:
            kind = "ALWAYS" if self.identity == "always" else "BY DEFAULT"
            options = self.sequence.sql() if self.sequence is not None else ""
            return f" GENERATED {kind} AS IDENTITY" + (f" ({options})" if options else "")
        if self.generated is not None:
            return f" GENERATED ALWAYS AS ({self.generated}) STORED"
        return ""


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
