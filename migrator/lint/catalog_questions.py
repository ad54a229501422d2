"""The questions the lint asks a live database (rules 4, 10, 14, 16, 22, 40 and volatility).

Each question runs read-only inside a savepoint, so a failure (a table the scratch
database lacks) never spoils the caller's transaction; the answer is then None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from migrator.sqltext import colons_escaped, ident, text

if TYPE_CHECKING:
    from sqlalchemy import Connection

T = TypeVar("T")


def _no_lock(schema: str, table: str, *, rows: bool = True) -> None:
    return None


class Live:
    """Read-only catalog and data questions over one SQLAlchemy connection.

    A question that reads a table's rows or its expressions (pg_get_expr) takes ACCESS
    SHARE on it, which waits behind another session's ACCESS EXCLUSIVE: ``lock`` (the
    catalog's `read_lock`) takes it first, under the lint's lock_timeout, and refuses
    in one line naming the table and its holder. The other questions read pg_catalog
    alone and take no table lock."""

    def __init__(self, conn: Connection, lock: Callable[..., None] = _no_lock) -> None:
        self.conn = conn
        self.lock = lock

    def _ask(self, question: Callable[[], T]) -> T | None:
        from sqlalchemy.exc import DBAPIError

        try:
            with self.conn.begin_nested() as savepoint:
                answer = question()
                savepoint.rollback()
                return answer
        except DBAPIError:
            return None

    def _scalar(self, sql: str, **params: Any) -> Any:
        return self._ask(lambda: self.conn.execute(text(sql), params).scalar())

    def server_version(self) -> int | None:
        """server_version_num."""
        value = self._scalar("SHOW server_version_num")
        return int(value) if value is not None else None

    def index_valid(self, schema: str, name: str) -> bool | None:
        """pg_index.indisvalid of an index, or None when there is no such index."""
        return self._scalar(  # type: ignore[no-any-return]
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :i",
            s=schema,
            i=name,
        )

    def partitioned(self, schema: str, table: str) -> bool | None:
        """True for a partitioned table, False for another relation, None when absent."""
        kind = self._scalar(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :t",
            s=schema,
            t=table,
        )
        return None if kind is None else kind == "p"

    def leaf_partitions(self, schema: str, table: str) -> list[str] | None:
        """The leaf partitions under a partitioned table (at any depth)."""
        from migrator.sqltext import text

        def leaves() -> list[str]:
            rows = self.conn.execute(
                text(
                    "WITH RECURSIVE tree(relid) AS (SELECT c.oid FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :s AND c.relname = :t "
                    "UNION ALL SELECT i.inhrelid FROM pg_inherits i "
                    "JOIN tree ON i.inhparent = tree.relid) "
                    "SELECT c.relname FROM tree JOIN pg_class c ON c.oid = tree.relid "
                    "WHERE c.relispartition AND c.relkind <> 'p' ORDER BY 1"
                ),
                {"s": schema, "t": table},
            ).all()
            return [str(r[0]) for r in rows]

        return self._ask(leaves)

    def index_table(self, schema: str, name: str) -> str | None:
        """The table an index belongs to."""
        return self._scalar(  # type: ignore[no-any-return]
            "SELECT t.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_class t ON t.oid = i.indrelid WHERE n.nspname = :s AND c.relname = :i",
            s=schema,
            i=name,
        )

    def row_count(self, schema: str, table: str) -> int | None:
        """The exact number of rows of a table."""
        self.lock(schema, table)
        value = self._scalar(f"SELECT count(*) FROM {ident(schema, table)}")
        return int(value) if value is not None else None

    def duplicates(
        self, schema: str, table: str, keys: Sequence[str], where: str | None, limit: int = 5
    ) -> tuple[int, list[tuple[str, int]]] | None:
        """Key values held by more than one row (NULLs never clash): how many, and the
        most frequent ``limit`` of them with their row counts. ``keys`` are SQL (their
        colons escaped: the statement binds ``:n``)."""
        self.lock(schema, table)
        keys = [colons_escaped(k) for k in keys]
        not_null = " AND ".join(f"({k}) IS NOT NULL" for k in keys)
        if where:
            not_null += f" AND ({colons_escaped(where)})"
        shown = " || ', ' || ".join(f"quote_nullable(({k})::text)" for k in keys)
        sql = (
            f"SELECT {shown}, count(*), count(*) OVER () FROM {ident(schema, table)} "
            f"WHERE {not_null} GROUP BY {', '.join(f'({k})' for k in keys)} "
            "HAVING count(*) > 1 ORDER BY count(*) DESC, 1 LIMIT :n"
        )
        rows = self._ask(lambda: self.conn.execute(text(sql), {"n": limit}).all())
        if rows is None:
            return None
        if not rows:
            return 0, []
        return int(rows[0][2]), [(str(r[0]), int(r[1])) for r in rows]

    def constraint_kind(self, schema: str, table: str, name: str) -> str | None:
        """pg_constraint.contype of a table's constraint (f, c, u, p, x, n)."""
        return self._scalar(  # type: ignore[no-any-return]
            "SELECT k.contype::text FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :t AND k.conname = :c",
            s=schema,
            t=table,
            c=name,
        )

    def foreign_key_target(self, schema: str, table: str, name: str) -> tuple[str, str] | None:
        """The (schema, table) a table's foreign key references; None for another kind of
        constraint or none of that name."""
        row = self._ask(
            lambda: self.conn.execute(
                text(
                    "SELECT rn.nspname, r.relname FROM pg_constraint k "
                    "JOIN pg_class c ON c.oid = k.conrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "JOIN pg_class r ON r.oid = k.confrelid "
                    "JOIN pg_namespace rn ON rn.oid = r.relnamespace "
                    "WHERE n.nspname = :s AND c.relname = :t AND k.conname = :c "
                    "AND k.contype = 'f'"
                ),
                {"s": schema, "t": table, "c": name},
            ).first()
        )
        return None if row is None else (str(row[0]), str(row[1]))

    def table_foreign_key_targets(
        self, schema: str, table: str
    ) -> list[tuple[tuple[str, str], tuple[str, str]]] | None:
        """Each foreign key of a table and of its partitions (a DROP TABLE drops them with
        it): (its table, its name) and the (schema, table) it references, when that is
        another table."""
        return self._ask(
            lambda: [
                ((str(r[0]), str(r[1])), (str(r[2]), str(r[3])))
                for r in self.conn.execute(
                    text(
                        "WITH RECURSIVE tree(relid) AS (SELECT CAST(:t AS regclass)::oid UNION ALL "
                        "SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid) "
                        "SELECT c.relname, k.conname, rn.nspname, r.relname "
                        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
                        "JOIN pg_class r ON r.oid = k.confrelid "
                        "JOIN pg_namespace rn ON rn.oid = r.relnamespace "
                        "WHERE k.contype = 'f' AND k.conrelid IN (SELECT relid FROM tree) "
                        "AND k.confrelid NOT IN (SELECT relid FROM tree)"
                    ),
                    {"t": ident(schema, table)},
                ).all()
            ]
        )

    def inheritance_children(self, schema: str, table: str) -> list[str] | None:
        """The tables inheriting from a plain table (a LOCK TABLE without ONLY locks them
        too); none for a partitioned one, whose children are its partitions."""
        return self._ask(
            lambda: [
                str(r[0])
                for r in self.conn.execute(
                    text(
                        "SELECT i.inhrelid::regclass::text FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhparent "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = :s AND c.relname = :t AND c.relkind <> 'p' "
                        "ORDER BY 1"
                    ),
                    {"s": schema, "t": table},
                ).all()
            ]
        )

    def column_foreign_key_targets(
        self, schema: str, table: str, column: str
    ) -> list[tuple[str, tuple[str, str]]] | None:
        """Each foreign key over a table's column (a DROP COLUMN drops them with it): its
        name and the (schema, table) it references."""
        return self._ask(
            lambda: [
                (str(r[2]), (str(r[0]), str(r[1])))
                for r in self.conn.execute(
                    text(
                        "SELECT rn.nspname, r.relname, k.conname FROM pg_constraint k "
                        "JOIN pg_class c ON c.oid = k.conrelid "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (k.conkey) "
                        "JOIN pg_class r ON r.oid = k.confrelid "
                        "JOIN pg_namespace rn ON rn.oid = r.relnamespace "
                        "WHERE n.nspname = :s AND c.relname = :t AND a.attname = :c "
                        "AND k.contype = 'f'"
                    ),
                    {"s": schema, "t": table, "c": column},
                ).all()
            ]
        )

    def column_type(self, schema: str, table: str, column: str) -> str | None:
        """format_type of a column."""
        return self._scalar(  # type: ignore[no-any-return]
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :t AND a.attname = :c AND NOT a.attisdropped",
            s=schema,
            t=table,
            c=column,
        )

    def check_expressions(self, schema: str, table: str) -> list[str]:
        """The expressions of a table's validated CHECK constraints."""
        self.lock(schema, table, rows=False)  # pg_get_expr opens the table
        rows = self._ask(
            lambda: self.conn.execute(
                text(
                    "SELECT pg_get_expr(k.conbin, k.conrelid) FROM pg_constraint k "
                    "JOIN pg_class c ON c.oid = k.conrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :s AND c.relname = :t AND k.contype = 'c' "
                    "AND k.convalidated"
                ),
                {"s": schema, "t": table},
            ).all()
        )
        return [str(r[0]) for r in rows or ()]

    def volatile_functions(self, names: Sequence[str]) -> bool | None:
        """True when any function of these names is volatile; None when none is known."""
        rows = self._ask(
            lambda: self.conn.execute(
                text("SELECT provolatile::text FROM pg_proc WHERE proname = ANY(:n)"),
                {"n": list(names)},
            ).all()
        )
        if not rows:
            return None
        return any(r[0] == "v" for r in rows)

    def nullable_index_columns(self, schema: str, index: str) -> list[str] | None:
        """The columns of an index that are not NOT NULL (None when there is no index)."""
        rows = self._ask(
            lambda: self.conn.execute(
                text(
                    "SELECT a.attname, a.attnotnull FROM pg_index i "
                    "JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = ANY(i.indkey::int2[]) "
                    "WHERE n.nspname = :s AND c.relname = :i"
                ),
                {"s": schema, "i": index},
            ).all()
        )
        if not rows:
            return None
        return [str(r[0]) for r in rows if not r[1]]
