"""Read-only questions about the live database that operations ask while validating."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from migrator.sqltext import ident


@dataclass(frozen=True)
class ColumnInfo:
    """A column as the catalog has it."""

    name: str
    type: str
    not_null: bool
    default: str | None


class Catalog:
    """Answers from pg_catalog over one connection; never changes anything."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @property
    def server_version(self) -> int:
        """server_version_num, e.g. 180006."""
        return int(self.conn.execute(text("SHOW server_version_num")).scalar_one())

    def table_exists(self, schema: str, table: str) -> bool:
        """True for an ordinary or partitioned table."""
        row = self.conn.execute(
            text(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relname = :t AND c.relkind IN ('r', 'p')"
            ),
            {"s": schema, "t": table},
        ).first()
        return row is not None

    def relation_kind(self, schema: str, name: str) -> str | None:
        """pg_class.relkind of a relation, or None where there is none."""
        return self.conn.execute(
            text(
                "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :t"
            ),
            {"s": schema, "t": name},
        ).scalar()

    def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        """The table's live columns in order."""
        rows = self.conn.execute(
            text(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                "pg_get_expr(d.adbin, d.adrelid) "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                "WHERE n.nspname = :s AND c.relname = :t AND a.attnum > 0 "
                "AND NOT a.attisdropped ORDER BY a.attnum"
            ),
            {"s": schema, "t": table},
        ).all()
        return [ColumnInfo(r[0], r[1], bool(r[2]), r[3]) for r in rows]

    def column(self, schema: str, table: str, column: str) -> ColumnInfo | None:
        """One live column, or None."""
        for col in self.columns(schema, table):
            if col.name == column:
                return col
        return None

    def primary_key(self, schema: str, table: str) -> list[str]:
        """The primary key's columns in key order (empty when there is none)."""
        rows = self.conn.execute(
            text(
                "SELECT a.attname FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
                "WHERE n.nspname = :s AND c.relname = :t AND i.indisprimary ORDER BY k.ord"
            ),
            {"s": schema, "t": table},
        ).all()
        return [r[0] for r in rows]

    def type_exists(self, type_sql: str) -> bool:
        """True when PostgreSQL knows the type as written (typmods included)."""
        try:
            with self.conn.begin_nested():
                value = self.conn.execute(text("SELECT to_regtype(:t)"), {"t": type_sql}).scalar()
        except DBAPIError:
            return False
        return value is not None

    def constraint_exists(self, schema: str, table: str, name: str) -> bool:
        """True when the table has a constraint of that name."""
        row = self.conn.execute(
            text(
                "SELECT 1 FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relname = :t AND k.conname = :c"
            ),
            {"s": schema, "t": table, "c": name},
        ).first()
        return row is not None

    def expression_error(
        self, schema: str, table: str, expression: str, cast_to: str | None = None
    ) -> str | None:
        """Why an SQL expression over the table's rows does not plan, or None when it does.

        The expression is planned (never run) inside a savepoint that is rolled back.
        """
        value = f"({expression})"
        if cast_to:
            value = f"{value}::{cast_to}"
        try:
            with self.conn.begin_nested() as sp:
                self.conn.execute(text(f"EXPLAIN SELECT {value} FROM {ident(schema, table)}"))
                sp.rollback()
        except DBAPIError as exc:
            orig = exc.orig
            if isinstance(orig, psycopg.Error) and orig.diag.message_primary:
                return orig.diag.message_primary
            return str(orig).splitlines()[0]
        return None
