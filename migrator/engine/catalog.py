"""Read-only questions about the live database that operations ask while validating."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migrator.durations import format_duration
from migrator.errors import LockNotAcquired
from migrator.sqltext import ident, raw, text

if TYPE_CHECKING:
    from sqlalchemy import Connection


@dataclass(frozen=True)
class ColumnInfo:
    """A column as the catalog has it."""

    name: str
    type: str
    not_null: bool
    default: str | None


@dataclass(frozen=True)
class LockWaits:
    """How a question that reads a table's rows (or plans over them) waits for the
    table's ACCESS SHARE lock: at most ``lock_timeout`` a try (set on the transaction by
    whoever builds the catalog), ``retries`` tries more, ``pause(what, attempt, reason)``
    between them (the executor's backoff, told to the observer), as a step would."""

    lock_timeout: float
    retries: int
    pause: Callable[[str, int, str], None]
    who: str = "the prechecks"  # who could not read the table, in the refusal


# lock_not_available and deadlock_detected are waits to retry; undefined_table and
# insufficient_privilege leave the question to fail (or answer) on its own.
_LOCK_NOT_AVAILABLE = "55P03"
_DEADLOCK = "40P01"
_LEFT_TO_THE_QUESTION = frozenset({"42P01", "42501"})


class Catalog:
    """Answers from pg_catalog over one connection; never changes anything.

    With ``waits``, a question that reads a table's rows first takes ACCESS SHARE on it
    under the plan's lock_timeout and retries (`read_lock`), so a precheck never waits
    without limit behind another session's ACCESS EXCLUSIVE, and one that cannot have
    the lock names the table and who holds it.
    """

    waits: LockWaits | None = None  # a class default too: the lint's offline catalog
    setup: tuple[str, ...] = ()

    def __init__(
        self, conn: Connection, waits: LockWaits | None = None, setup: Sequence[str] = ()
    ) -> None:
        """``setup``: the statements that begin each transaction of the questions (the
        plan's schema first on the search_path, the lock_timeout: SET LOCAL), run here
        and again after `read_lock` rolls the transaction back."""
        self.conn = conn
        self.waits = waits
        self.setup = tuple(setup)
        self._read_locked: set[tuple[str, str, bool]] = set()
        self._begin()

    def _begin(self) -> None:
        for sql in self.setup:
            self.conn.execute(raw(sql))

    def read_lock(self, schema: str, table: str, *, rows: bool = True) -> None:
        """ACCESS SHARE on a table, held to the end of the transaction, before a question
        reads its rows or plans over them (``rows``: its partitions too, as a scan or a
        plan of the table locks them) or reads its definition (not ``rows``: the table
        alone, as pg_get_expr or CREATE TABLE ... LIKE lock it): the lock that question
        takes anyway, taken on purpose so that its wait is bounded and named.

        Each try waits at most lock_timeout (the transaction's). A try that times out or
        deadlocks rolls the whole transaction back before it waits again: the locks
        the questions before it took go with it, so an application's ALTER never queues
        behind migrator's backoff (and the other side of a deadlock goes on); the tables
        are locked again as their questions come. Never called inside a savepoint of the
        caller's, which that rollback would end. After the last retry `LockNotAcquired`
        (exit 5) names the table and the session holding the lock. Without ``waits``
        (the lint, authoring) nothing is taken here.
        """
        if self.waits is None or (schema, table, rows) in self._read_locked:
            return
        if (schema, table, True) in self._read_locked:
            return
        from sqlalchemy.exc import DBAPIError

        if self.conn.in_nested_transaction():
            raise RuntimeError(f"read_lock({schema}.{table}) inside a savepoint")
        only = "" if rows else "ONLY "
        attempt = 0
        while True:
            try:
                with self.conn.begin_nested():
                    self.conn.execute(
                        text(f"LOCK TABLE {only}{ident(schema, table)} IN ACCESS SHARE MODE")
                    )
            except DBAPIError as exc:
                state = getattr(exc.orig, "sqlstate", None)
                if state in _LEFT_TO_THE_QUESTION:
                    return
                if state not in (_LOCK_NOT_AVAILABLE, _DEADLOCK):
                    raise
                self.conn.rollback()
                self._read_locked.clear()
                self._begin()
                if attempt >= self.waits.retries:
                    raise LockNotAcquired(
                        self._not_read(schema, table, attempt, deadlock=state == _DEADLOCK)
                    ) from None
                attempt += 1
                reason = "deadlock" if state == _DEADLOCK else "lock timeout"
                self.waits.pause(f"precheck {schema}.{table}", attempt, reason)
                continue
            self._read_locked.add((schema, table, rows))
            return

    def _not_read(self, schema: str, table: str, retries: int, *, deadlock: bool) -> str:
        assert self.waits is not None
        why = (
            "taking its lock deadlocked with another session"
            if deadlock
            else f"within lock_timeout {format_duration(self.waits.lock_timeout)}"
        )
        return (
            f"{self.waits.who} could not read {schema}.{table} {why} after {retries} retries: "
            f"{self._lock_holder(schema, table)}; nothing was changed; rerun when it is done"
        )

    def _lock_holder(self, schema: str, table: str) -> str:
        """Who holds (or waits ahead for) ACCESS EXCLUSIVE on a table or one of its
        partitions, as the one clause of a refusal."""
        row = self.conn.execute(
            text(
                "SELECT l.pid, l.granted, l.relation = to_regclass(:t), l.relation::regclass::text, "
                "a.state, "
                "left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80) "
                "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' "
                "AND l.database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) "
                "AND l.pid IS DISTINCT FROM pg_backend_pid() "
                "AND (l.relation = to_regclass(:t) "
                "OR l.relation IN (SELECT relid FROM pg_partition_tree(to_regclass(:t)))) "
                "ORDER BY l.granted DESC, l.pid LIMIT 1"
            ),
            {"t": ident(schema, table)},
        ).first()
        if row is None:
            return "another session holds a lock on it that conflicts with reading it"
        pid, granted, itself, relation, state, query = row
        who = "a prepared transaction" if pid is None else f"pid {pid}"
        where = "it" if itself else f"its partition {relation}"
        verb = "holds" if granted else "waits ahead for"
        doing = f" ({state}: {query})" if state and query else (f" ({state})" if state else "")
        return f"{who} {verb} ACCESS EXCLUSIVE on {where}{doing}"

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
        """The table's live columns in order (pg_get_expr takes ACCESS SHARE)."""
        self.read_lock(schema, table, rows=False)
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
        from sqlalchemy.exc import DBAPIError

        try:
            with self.conn.begin_nested():
                value = self.conn.execute(text("SELECT to_regtype(:t)"), {"t": type_sql}).scalar()
        except DBAPIError:
            return False
        return value is not None

    def domain_not_null(self, type_sql: str) -> bool:
        """True when the type as written is a domain that refuses NULL (itself or a
        domain it is over)."""
        return bool(
            self.conn.execute(
                text(
                    "WITH RECURSIVE d(oid) AS (SELECT to_regtype(:t)::oid UNION ALL "
                    "SELECT t.typbasetype FROM pg_type t JOIN d ON t.oid = d.oid "
                    "WHERE t.typtype = 'd') "
                    "SELECT EXISTS (SELECT FROM pg_type t JOIN d USING (oid) "
                    "WHERE t.typtype = 'd' AND t.typnotnull)"
                ),
                {"t": type_sql},
            ).scalar()
        )

    def type_spelling(self, type_sql: str) -> str | None:
        """The server's own spelling of a type as written (format_type: ``varchar(20)``
        becomes ``character varying(20)``, a visible user type loses its schema), or None
        when it is no type.

        A temporary table inside a savepoint that is rolled back answers it on every
        version (to_regtypemod() is PostgreSQL 17+), without a trace.
        """
        from sqlalchemy.exc import DBAPIError

        try:
            with self.conn.begin_nested() as sp:
                self.conn.execute(
                    raw(f"CREATE TEMPORARY TABLE _migrator_typmod (v {type_sql}) ON COMMIT DROP")
                )
                value = self.conn.execute(
                    text(
                        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                        "WHERE attrelid = '_migrator_typmod'::regclass AND attname = 'v'"
                    )
                ).scalar()
                sp.rollback()
        except DBAPIError:
            return None
        return None if value is None else str(value)

    def may_lock(self, schema: str, name: str) -> bool:
        """Whether the role may LOCK TABLE the relation in a mode above ACCESS SHARE:
        PostgreSQL asks UPDATE, DELETE or TRUNCATE there (or MAINTAIN, 17+); a foreign
        key to it needs only REFERENCES. True where there is no such relation (the
        statement then fails on that)."""
        privileges = "UPDATE, DELETE, TRUNCATE"
        if self.server_version >= 170000:
            privileges += ", MAINTAIN"
        allowed = self.conn.execute(
            text(
                "SELECT has_table_privilege(c.oid, :p) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :t"
            ),
            {"s": schema, "t": name, "p": privileges},
        ).scalar()
        return allowed is not False

    def referenced_tables(self, schema: str, table: str) -> list[tuple[str, str]]:
        """The (schema, table) of each other table the foreign keys of a table (and of
        its partitions) reference, in name order: dropping the table drops those keys,
        under ACCESS EXCLUSIVE on each of them."""
        rows = self.conn.execute(
            text(
                "WITH RECURSIVE tree(relid) AS (SELECT CAST(:t AS regclass)::oid UNION ALL "
                "SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid) "
                "SELECT DISTINCT rn.nspname, r.relname FROM pg_constraint k "
                "JOIN pg_class r ON r.oid = k.confrelid "
                "JOIN pg_namespace rn ON rn.oid = r.relnamespace "
                "WHERE k.contype = 'f' AND k.conrelid IN (SELECT relid FROM tree) "
                "AND k.confrelid NOT IN (SELECT relid FROM tree) ORDER BY 1, 2"
            ),
            {"t": ident(schema, table)},
        ).all()
        return [(str(r[0]), str(r[1])) for r in rows]

    def constraint_exists(
        self, schema: str, table: str, name: str, *, standalone: bool = False
    ) -> bool:
        """True when the table has a constraint of that name (``standalone``: one of its
        own, not a partition's copy of its parent's)."""
        row = self.conn.execute(
            text(
                "SELECT 1 FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relname = :t AND k.conname = :c"
                + (" AND k.conparentid = 0" if standalone else "")
            ),
            {"s": schema, "t": table, "c": name},
        ).first()
        return row is not None

    def expression_error(
        self,
        schema: str,
        table: str,
        expression: str,
        cast_to: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> str | None:
        """Why an SQL expression over the table's rows does not plan, or None when it does.

        ``extra`` (column -> type) are columns the table does not have yet (an earlier
        operation of the plan adds them): the rows are read with them added, NULL.
        The expression is planned (never run) inside a savepoint that is rolled back.
        """
        import psycopg
        from sqlalchemy.exc import DBAPIError

        self.read_lock(schema, table)
        value = f"({expression})"
        if cast_to:
            value = f"{value}::{cast_to}"
        source = ident(schema, table)
        if extra:
            added = ", ".join(f"NULL::{t} AS {ident(c)}" for c, t in extra.items())
            source = f"(SELECT *, {added} FROM {source}) AS {ident(table)}"
        try:
            with self.conn.begin_nested() as sp:
                self.conn.execute(raw(f"EXPLAIN SELECT {value} FROM {source}"))
                sp.rollback()
        except DBAPIError as exc:
            orig = exc.orig
            if getattr(orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                raise  # a wait, not PostgreSQL's verdict on the expression
            if isinstance(orig, psycopg.Error) and orig.diag.message_primary:
                return orig.diag.message_primary
            return str(orig).splitlines()[0]
        return None

    # -- questions the operation catalogue asks (issue 3) ---------------------------------

    def index(self, schema: str, name: str) -> IndexInfo | None:
        """An index by name in a schema, or None."""
        row = self.conn.execute(
            text(
                "SELECT t.relname, i.indisvalid, i.indisunique, am.amname, "
                "(SELECT k.conname FROM pg_constraint k WHERE k.conindid = ic.oid "
                " AND k.contype IN ('p', 'u', 'x') LIMIT 1), "
                "ARRAY(SELECT pg_get_indexdef(ic.oid, g.n, true) "
                "      FROM generate_series(1, i.indnkeyatts) AS g(n) ORDER BY g.n), "
                "obj_description(ic.oid, 'pg_class') "
                "FROM pg_class ic JOIN pg_namespace n ON n.oid = ic.relnamespace "
                "JOIN pg_index i ON i.indexrelid = ic.oid "
                "JOIN pg_class t ON t.oid = i.indrelid "
                "JOIN pg_am am ON am.oid = ic.relam "
                "WHERE n.nspname = :s AND ic.relname = :i"
            ),
            {"s": schema, "i": name},
        ).first()
        if row is None:
            return None
        return IndexInfo(
            name, row[0], bool(row[1]), bool(row[2]), row[3], row[4], list(row[5]), row[6]
        )

    def constraint(self, schema: str, table: str, name: str) -> ConstraintInfo | None:
        """A constraint of a table by name, or None."""
        row = self.conn.execute(
            text(
                "SELECT k.contype::text, k.convalidated, ic.relname "
                "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_class ic ON ic.oid = k.conindid "
                "WHERE n.nspname = :s AND c.relname = :t AND k.conname = :c"
            ),
            {"s": schema, "t": table, "c": name},
        ).first()
        if row is None:
            return None
        return ConstraintInfo(name, row[0], bool(row[1]), row[2])

    def has_unique_key(self, schema: str, table: str, columns: list[str]) -> bool:
        """True when a primary key, unique constraint or plain unique index covers exactly
        these columns: what a foreign key needs on the side it references.
        """
        rows = self.conn.execute(
            text(
                "SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey) AS u(attnum) "
                "             JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "             AND a.attnum = u.attnum) "
                "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relname = :t AND i.indisunique AND i.indisvalid "
                "AND i.indpred IS NULL AND i.indexprs IS NULL"
            ),
            {"s": schema, "t": table},
        ).all()
        return any(sorted(r[0]) == sorted(columns) for r in rows)

    def type_kind(self, schema: str, name: str) -> str | None:
        """pg_type.typtype of a type in a schema ('e' for an enum), or None."""
        return self.conn.execute(
            text(
                "SELECT t.typtype::text FROM pg_type t "
                "JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = :s AND t.typname = :t"
            ),
            {"s": schema, "t": name},
        ).scalar()

    def enum_values(self, schema: str, name: str) -> list[str]:
        """The labels of an enum type, in sort order (empty when it is no enum)."""
        rows = self.conn.execute(
            text(
                "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
                "JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = :s AND t.typname = :t ORDER BY e.enumsortorder"
            ),
            {"s": schema, "t": name},
        ).all()
        return [r[0] for r in rows]

    def row_count(self, schema: str, table: str) -> int:
        """The exact number of rows of a table."""
        self.read_lock(schema, table)
        return int(
            self.conn.execute(text(f"SELECT count(*) FROM {ident(schema, table)}")).scalar_one()
        )

    def null_count(self, schema: str, table: str, column: str) -> int:
        """How many rows hold NULL in a column."""
        self.read_lock(schema, table)
        return int(
            self.conn.execute(
                text(f"SELECT count(*) FROM {ident(schema, table)} WHERE {ident(column)} IS NULL")
            ).scalar_one()
        )

    def duplicates(
        self, schema: str, table: str, columns: list[str], limit: int = 5
    ) -> tuple[int, list[tuple[str, int]]]:
        """Values of ``columns`` held by more than one row (NULLs never clash).

        Returns how many distinct values clash, and up to ``limit`` of them as text with
        their row counts, most frequent first.
        """
        self.read_lock(schema, table)
        cols = ", ".join(ident(c) for c in columns)
        not_null = " AND ".join(f"{ident(c)} IS NOT NULL" for c in columns)
        shown = " || ', ' || ".join(f"quote_nullable({ident(c)}::text)" for c in columns)
        rows = self.conn.execute(
            text(
                f"SELECT {shown}, count(*), count(*) OVER () FROM {ident(schema, table)} "
                f"WHERE {not_null} GROUP BY {cols} HAVING count(*) > 1 "
                f"ORDER BY count(*) DESC, 1 LIMIT :n"
            ),
            {"n": limit},
        ).all()
        if not rows:
            return 0, []
        return int(rows[0][2]), [(str(r[0]), int(r[1])) for r in rows]

    def duplicates_of(
        self, schema: str, table: str, expression: str, limit: int = 5
    ) -> tuple[int, list[tuple[str, int]]]:
        """Values an SQL expression over the table's rows gives more than one row (NULLs
        never clash), as `duplicates` counts them: what a unique constraint over a column
        rewritten by that expression would refuse."""
        self.read_lock(schema, table)
        rows = self.conn.execute(
            text(
                "SELECT quote_nullable(v::text), count(*), count(*) OVER () "
                f"FROM (SELECT ({expression}) AS v FROM {ident(schema, table)}) AS rewritten "
                f"WHERE v IS NOT NULL GROUP BY v HAVING count(*) > 1 "
                f"ORDER BY count(*) DESC, 1 LIMIT {int(limit)}"
            )
        ).all()
        if not rows:
            return 0, []
        return int(rows[0][2]), [(str(r[0]), int(r[1])) for r in rows]

    def dependants(self, schema: str, relation: str, column: str | None = None) -> list[str]:
        """What depends on a relation (or one of its columns), as PostgreSQL names it.

        Read from pg_depend. For a whole relation only objects outside it count (its own
        indexes, constraints and triggers go with it); for a column, everything that
        uses it except its default, its owned sequence and its NOT NULL marker. Objects
        migrator created itself (``_migrator_`` names, rename_table's view under the old
        name) are left out: the contract halves of the plan's own operations drop them
        first.
        """
        rows = self.conn.execute(
            text(_DEPENDANTS_SQL),
            {"s": schema, "r": relation, "col": column, "whole": column is None},
        ).all()
        return sorted({r[0] for r in rows})

    def index_dependants(self, schema: str, index: str) -> list[str]:
        """Constraints (foreign keys) that rely on an index, as PostgreSQL names them."""
        rows = self.conn.execute(
            text(
                "SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) "
                "FROM pg_depend d JOIN pg_class ic ON ic.oid = d.refobjid "
                "JOIN pg_namespace n ON n.oid = ic.relnamespace "
                "WHERE d.refclassid = 'pg_class'::regclass AND n.nspname = :s "
                "AND ic.relname = :i AND d.deptype = 'n' ORDER BY 1"
            ),
            {"s": schema, "i": index},
        ).all()
        return [r[0] for r in rows]


@dataclass(frozen=True)
class IndexInfo:
    """An index as the catalog has it; ``constraint`` names the constraint it backs."""

    name: str
    table: str
    valid: bool
    unique: bool
    method: str
    constraint: str | None
    keys: list[str]
    comment: str | None = None


@dataclass(frozen=True)
class ConstraintInfo:
    """A table constraint: ``kind`` is pg_constraint.contype (c, f, p, u, x, n)."""

    name: str
    kind: str
    validated: bool
    index: str | None


# Dependants of a relation or column: views are named through their rewrite rule, a
# generated column through its expression; the relation's own parts (indexes,
# constraints, triggers, policies, statistics, defaults), owned sequences and NOT NULL
# markers are left out of a whole-relation drop.
_DEPENDANTS_SQL = """
WITH target AS (
    SELECT c.oid, a.attnum
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = :col
    WHERE n.nspname = :s AND c.relname = :r
)
SELECT CASE
         WHEN d.classid = 'pg_rewrite'::regclass
           THEN (SELECT CASE v.relkind WHEN 'm' THEN 'materialized view ' ELSE 'view ' END
                        || v.oid::regclass::text
                 FROM pg_rewrite r JOIN pg_class v ON v.oid = r.ev_class WHERE r.oid = d.objid)
         WHEN d.classid = 'pg_attrdef'::regclass
           -- the expression of a generated column that reads this one
           THEN replace(pg_describe_object(d.classid, d.objid, d.objsubid),
                        'default value for column ', 'generated column ')
         ELSE pg_describe_object(d.classid, d.objid, d.objsubid)
       END
FROM pg_depend d, target t
WHERE d.refclassid = 'pg_class'::regclass
  AND d.refobjid = t.oid
  AND d.deptype IN ('n', 'a')
  AND (:whole OR d.refobjsubid = t.attnum)
  AND NOT (d.classid = 'pg_attrdef'::regclass AND (d.deptype = 'a' OR :whole))
  AND NOT (d.classid = 'pg_class'::regclass
           AND EXISTS (SELECT 1 FROM pg_class s WHERE s.oid = d.objid AND s.relkind = 'S'))
  AND NOT (d.classid = 'pg_rewrite'::regclass
           AND EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.oid = d.objid
                       AND (r.ev_class = t.oid
                            -- rename_table's view under the old name: its contract drops it
                            OR obj_description(r.ev_class, 'pg_class')
                               LIKE 'migrator: the old name of %')))
  AND NOT (d.classid = 'pg_constraint'::regclass
           AND EXISTS (SELECT 1 FROM pg_constraint k WHERE k.oid = d.objid
                       AND (k.contype = 'n' OR k.conname LIKE '\\_migrator\\_%'
                            OR (:whole AND k.conrelid = t.oid))))
  AND NOT (d.classid = 'pg_trigger'::regclass
           AND EXISTS (SELECT 1 FROM pg_trigger g WHERE g.oid = d.objid
                       AND (g.tgname LIKE '\\_migrator\\_%' OR (:whole AND g.tgrelid = t.oid))))
  AND NOT (:whole AND d.classid = 'pg_class'::regclass
           AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = d.objid
                       AND i.indrelid = t.oid))
  AND NOT (:whole AND d.classid = 'pg_type'::regclass)
  AND NOT (:whole AND d.classid = 'pg_policy'::regclass
           AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.oid = d.objid AND p.polrelid = t.oid))
  AND NOT (:whole AND d.classid = 'pg_statistic_ext'::regclass
           AND EXISTS (SELECT 1 FROM pg_statistic_ext x WHERE x.oid = d.objid
                       AND x.stxrelid = t.oid))
UNION
-- a whole table also takes its row type: columns and functions of that type elsewhere
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) || ' (of its row type)'
FROM pg_depend d, target t JOIN pg_class c ON c.oid = t.oid
WHERE :whole AND d.refclassid = 'pg_type'::regclass AND d.refobjid = c.reltype
  AND d.deptype = 'n'
"""
