"""The catalog the operations see when the lint runs with no database.

Operations build their statements from a `Context` whose catalog they may ask about
the live schema. Offline there is none, so this catalog answers as if the plan were
right about the database: its tables exist, the columns and objects it adds do not yet,
types are known. That is enough to build the statements the plan will run; verdicts
that need real answers (duplicates, row counts, INVALID indexes) are only given with a
database. A question it cannot answer raises `NeedsDatabase`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from migrator.engine.catalog import Catalog, ColumnInfo, ConstraintInfo, IndexInfo
from migrator.errors import UsageError


class NeedsDatabase(UsageError):
    """An operation asked the catalog something only a live database can answer."""


class OfflineCatalog(Catalog):
    """Answers for a database that is not there (see the module docstring)."""

    def __init__(self, server_version: int) -> None:
        # No connection: every question is answered below or refused by `conn`.
        self._version = server_version

    @property  # type: ignore[override]
    def conn(self) -> NoReturn:
        raise NeedsDatabase(
            "building this operation's statements needs the database: pass --database-url, "
            "or run `migrator check` (it builds the schema on a scratch database)"
        )

    @conn.setter
    def conn(self, value: Any) -> None:
        raise AttributeError("the offline catalog has no connection")

    @property
    def server_version(self) -> int:
        return self._version

    def table_exists(self, schema: str, table: str) -> bool:
        return True

    def relation_kind(self, schema: str, name: str) -> str | None:
        return None

    def referenced_tables(self, schema: str, table: str) -> list[tuple[str, str]]:
        return []

    def may_lock(self, schema: str, name: str) -> bool:
        return True

    def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        return []

    def column(self, schema: str, table: str, column: str) -> ColumnInfo | None:
        return None

    def primary_key(self, schema: str, table: str) -> list[str]:
        return []

    def type_exists(self, type_sql: str) -> bool:
        return True

    def constraint_exists(
        self, schema: str, table: str, name: str, *, standalone: bool = False
    ) -> bool:
        return False

    def expression_error(
        self,
        schema: str,
        table: str,
        expression: str,
        cast_to: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> str | None:
        return None

    def index(self, schema: str, name: str) -> IndexInfo | None:
        return None

    def constraint(self, schema: str, table: str, name: str) -> ConstraintInfo | None:
        return None

    def has_unique_key(self, schema: str, table: str, columns: list[str]) -> bool:
        return True

    def type_kind(self, schema: str, name: str) -> str | None:
        return None

    def enum_values(self, schema: str, name: str) -> list[str]:
        return []

    def dependants(self, schema: str, relation: str, column: str | None = None) -> list[str]:
        return []

    def index_dependants(self, schema: str, index: str) -> list[str]:
        return []

    def row_count(self, schema: str, table: str) -> int:
        # Operations only word step descriptions with it; the lint's own row counts
        # (rule M022) come from a live database, never from here.
        return 0
