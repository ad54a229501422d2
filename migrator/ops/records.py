"""Saved records: what an operation's expand remembers for its rollback.

A record is a function of no arguments in migrator's schema that returns a constant
text (JSON, or one value). It is made in the same transaction as the change it
remembers, so it exists exactly when the change does, and the rollback reads it even
though the catalog no longer shows what it held; the contract (or the rollback) drops it.
"""

from __future__ import annotations

from dataclasses import dataclass

from migrator.engine.catalog_columns import function_exists, function_text
from migrator.ops.base import Context
from migrator.sqltext import dollar_quoted, ident, literal, private_function_sql

SCHEMA = "migrator"


@dataclass(frozen=True)
class SavedRecord:
    """One record, by its function's name in migrator's schema (unquoted)."""

    name: str

    def function(self) -> str:
        """The function's quoted, qualified name."""
        return ident(SCHEMA, self.name)

    def save_sql(self, value: str) -> tuple[str, str]:
        """Make the record return ``value``; PUBLIC may not execute it."""
        return (
            f"CREATE OR REPLACE FUNCTION {self.function()}() RETURNS text "
            f"LANGUAGE sql IMMUTABLE AS {dollar_quoted(f' SELECT {literal(value)} ')}",
            private_function_sql(self.function()),
        )

    def forget_sql(self) -> str:
        """Drop the record (rerunnable)."""
        return f"DROP FUNCTION IF EXISTS {self.function()}()"

    def exists(self, ctx: Context) -> bool:
        """True once the expand saved it (and until the contract or the rollback)."""
        return function_exists(ctx.catalog, SCHEMA, self.name)

    def read(self, ctx: Context) -> str | None:
        """What the record holds, or None when there is none."""
        if not self.exists(ctx):
            return None
        return function_text(ctx.catalog, self.function())
