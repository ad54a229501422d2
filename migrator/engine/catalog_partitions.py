"""What the catalog says about partitioned tables: read-only questions.

The partition tree of a table, the index of a partitioned index on each partition, and
what a partition bound would do (overlap an existing partition, leave rows out), asked
of PostgreSQL itself: a bound is tried on a scratch temporary partitioned table with the
same key, inside a savepoint that is rolled back, so no live table is locked beyond
ACCESS SHARE and no bound is parsed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from migrator.sqltext import ident, raw, text

if TYPE_CHECKING:
    from migrator.engine.catalog import Catalog


@dataclass(frozen=True)
class Partition:
    """One partition of a partitioned table (any depth below it)."""

    schema: str
    name: str
    parent: str
    level: int
    partitioned: bool
    bound: str
    detach_pending: bool = False
    parent_schema: str = ""


def is_partitioned(cat: Catalog, schema: str, table: str) -> bool:
    """True for a partitioned table (relkind 'p')."""
    return cat.relation_kind(schema, table) == "p"


def partitions(cat: Catalog, schema: str, table: str) -> list[Partition]:
    """Every partition under the table, parents before their children, by name."""
    # pg_inherits walked by hand: pg_partition_tree() locks every partition (ACCESS
    # SHARE), so it would wait behind a lock held on any of them, with no lock_timeout;
    # a bound holds no column, so pg_get_expr needs no relation (0), which would lock too.
    rows = cat.conn.execute(
        text(
            "WITH RECURSIVE tree(relid, parent, level) AS ("
            " SELECT i.inhrelid, i.inhparent, 1 FROM pg_inherits i"
            " JOIN pg_class p ON p.oid = i.inhparent"
            " JOIN pg_namespace pn ON pn.oid = p.relnamespace"
            " WHERE pn.nspname = :s AND p.relname = :t AND p.relkind = 'p'"
            " UNION ALL SELECT i.inhrelid, i.inhparent, tree.level + 1"
            " FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid) "
            "SELECT n.nspname, c.relname, pc.relname, t.level, c.relkind = 'p', "
            "pg_get_expr(c.relpartbound, 0), i.inhdetachpending, pcn.nspname "
            "FROM tree t JOIN pg_class c ON c.oid = t.relid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_class pc ON pc.oid = t.parent "
            "JOIN pg_namespace pcn ON pcn.oid = pc.relnamespace "
            "JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = t.parent "
            "ORDER BY t.level, c.relname"
        ),
        {"s": schema, "t": table},
    ).all()
    return [
        Partition(r[0], r[1], r[2], int(r[3]), bool(r[4]), r[5], bool(r[6]), r[7]) for r in rows
    ]


def partition_of(cat: Catalog, schema: str, table: str) -> Partition | None:
    """The table as a partition of its parent, or None when it is no partition."""
    row = cat.conn.execute(
        text(
            "SELECT pn.nspname, pc.relname, pg_get_expr(c.relpartbound, c.oid), "
            "c.relkind = 'p', i.inhdetachpending "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_inherits i ON i.inhrelid = c.oid "
            "JOIN pg_class pc ON pc.oid = i.inhparent "
            "JOIN pg_namespace pn ON pn.oid = pc.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :t AND c.relispartition"
        ),
        {"s": schema, "t": table},
    ).first()
    if row is None:
        return None
    return Partition(schema, table, row[1], 1, bool(row[3]), row[2], bool(row[4]))


@dataclass(frozen=True)
class PartitionIndex:
    """The index of a partition attached to (or meant for) a partitioned index."""

    name: str
    valid: bool
    attached_to: str | None
    comment: str | None


def partition_index(cat: Catalog, schema: str, name: str) -> PartitionIndex | None:
    """An index by name, with the partitioned index it is attached to (if any)."""
    row = cat.conn.execute(
        text(
            "SELECT i.indisvalid, pi.relname, obj_description(ic.oid, 'pg_class') "
            "FROM pg_class ic JOIN pg_namespace n ON n.oid = ic.relnamespace "
            "JOIN pg_index i ON i.indexrelid = ic.oid "
            "LEFT JOIN pg_inherits h ON h.inhrelid = ic.oid "
            "LEFT JOIN pg_class pi ON pi.oid = h.inhparent "
            "WHERE n.nspname = :s AND ic.relname = :i"
        ),
        {"s": schema, "i": name},
    ).first()
    if row is None:
        return None
    return PartitionIndex(name, bool(row[0]), row[1], row[2])


def partition_key(cat: Catalog, schema: str, table: str) -> str | None:
    """pg_get_partkeydef of a partitioned table (``RANGE (at)``), or None."""
    value = cat.conn.execute(
        text(
            "SELECT pg_get_partkeydef(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :t AND c.relkind = 'p'"
        ),
        {"s": schema, "t": table},
    ).scalar()
    return None if value is None else str(value)


def partition_key_columns(cat: Catalog, schema: str, table: str) -> list[str] | None:
    """The columns of a partitioned table's key, or None when an expression is part of it."""
    row = cat.conn.execute(
        text(
            "SELECT ARRAY(SELECT a.attname::text FROM unnest(p.partattrs) WITH ORDINALITY "
            "AS u(attnum, ord) LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid "
            "AND a.attnum = u.attnum ORDER BY u.ord) "
            "FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :t"
        ),
        {"s": schema, "t": table},
    ).first()
    if row is None:
        return []
    names = list(row[0])
    return None if any(n is None for n in names) else [str(n) for n in names]


@dataclass(frozen=True)
class BoundTrial:
    """What a partition bound does: ``error`` when PostgreSQL refuses it beside the
    existing partitions (overlap, bad values), else the partition constraint it means."""

    error: str | None
    constraint: str | None


def try_bound(
    cat: Catalog, schema: str, table: str, bound: str, *, skip: str = "", name: str = "new"
) -> BoundTrial:
    """Try ``bound`` (``FOR VALUES ...`` or ``DEFAULT``) beside the table's partitions.

    A temporary copy of the table's columns, partitioned by the same key, gets one
    temporary partition per live partition (``skip`` left out: the one being detached
    or re-attached) and then the new bound: PostgreSQL's own overlap check, with live
    partition names put back into its message. All inside a savepoint rolled back.
    """
    import psycopg
    from sqlalchemy.exc import DBAPIError

    key = partition_key(cat, schema, table)
    if key is None:
        return BoundTrial(f"{schema}.{table} is not a partitioned table", None)
    cat.read_lock(schema, table, rows=False)  # LIKE takes ACCESS SHARE
    live = [p for p in partitions(cat, schema, table) if p.level == 1 and p.name != skip]
    names = {f"_migrator_probe_{n}": p.name for n, p in enumerate(live)}
    names["_migrator_probe_new"] = name
    try:
        with cat.conn.begin_nested() as sp:
            cat.conn.execute(
                text(
                    f"CREATE TEMPORARY TABLE _migrator_probe (LIKE {ident(schema, table)}) "
                    f"PARTITION BY {key}"
                )
            )
            for probe, part in zip(list(names)[:-1], live, strict=True):
                cat.conn.execute(
                    text(
                        f"CREATE TEMPORARY TABLE {ident(probe)} PARTITION OF _migrator_probe "
                        f"{part.bound}"
                    )
                )
            try:
                cat.conn.execute(
                    text(
                        "CREATE TEMPORARY TABLE _migrator_probe_new PARTITION OF "
                        f"_migrator_probe {bound}"
                    )
                )
            except DBAPIError as exc:
                orig = exc.orig
                message = (
                    orig.diag.message_primary
                    if isinstance(orig, psycopg.Error) and orig.diag.message_primary
                    else str(orig).splitlines()[0]
                ) or "refused"
                for probe, real in sorted(names.items(), key=lambda kv: -len(kv[0])):
                    message = message.replace(f'"{probe}"', f'"{real}"')
                sp.rollback()
                return BoundTrial(message, None)
            constraint = cat.conn.execute(
                text("SELECT pg_get_partition_constraintdef('_migrator_probe_new'::regclass)")
            ).scalar()
            sp.rollback()
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":
            raise  # a wait, not PostgreSQL's verdict on the bound
        return BoundTrial(str(exc.orig).splitlines()[0], None)
    return BoundTrial(None, None if constraint is None else str(constraint))


def rows_outside(cat: Catalog, schema: str, table: str, constraint: str) -> int:
    """How many rows of a table the partition constraint refuses (as a CHECK would)."""
    cat.read_lock(schema, table)
    return int(
        cat.conn.execute(
            raw(f"SELECT count(*) FROM {ident(schema, table)} WHERE NOT ({constraint})")
        ).scalar_one()
    )


def partition_constraint(cat: Catalog, schema: str, partition: str) -> str | None:
    """The partition constraint of an attached partition (its bound as a condition)."""
    value = cat.conn.execute(
        text(
            "SELECT pg_get_partition_constraintdef(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :t AND c.relispartition"
        ),
        {"s": schema, "t": partition},
    ).scalar()
    return None if value is None else str(value)


def foreign_key_violations(
    cat: Catalog,
    schema: str,
    table: str,
    columns: list[str],
    ref_table: str,
    ref_columns: list[str],
    *,
    full: bool = False,
) -> int:
    """How many rows of a table a foreign key would refuse: every key column set and no
    matching row referenced (MATCH SIMPLE); with ``full``, also a key partly NULL."""
    cat.read_lock(schema, table)
    cat.read_lock(schema, ref_table)
    cols = [ident(c) for c in columns]
    match = " AND ".join(f"r.{ident(rc)} = t.{c}" for rc, c in zip(ref_columns, cols, strict=True))
    missing = (
        " AND ".join(f"t.{c} IS NOT NULL" for c in cols)
        + f" AND NOT EXISTS (SELECT 1 FROM {ident(schema, ref_table)} r WHERE {match})"
    )
    if full and len(cols) > 1:
        nulls = f"num_nulls({', '.join(f't.{c}' for c in cols)})"
        missing = f"({missing}) OR {nulls} BETWEEN 1 AND {len(cols) - 1}"
    return int(
        cat.conn.execute(
            raw(f"SELECT count(*) FROM {ident(schema, table)} t WHERE {missing}")
        ).scalar_one()
    )


@dataclass(frozen=True)
class TableIndex:
    """An index of one table: its definition (pg_get_indexdef), whether it is valid and
    attached to a partitioned index, the kind of constraint it backs (``p``, ``u``,
    ``x`` or None) and its comment."""

    name: str
    definition: str
    valid: bool
    attached: bool
    constraint: str | None
    comment: str | None


def table_indexes(cat: Catalog, schema: str, table: str) -> list[TableIndex]:
    """The table's own indexes (a partitioned table's: its partitioned indexes), by name."""
    rows = cat.conn.execute(
        text(
            "SELECT ic.relname, pg_get_indexdef(i.indexrelid), i.indisvalid, ic.relispartition, "
            "con.contype::text, obj_description(ic.oid, 'pg_class') "
            "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
            "JOIN pg_class t ON t.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid "
            "AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x') "
            "WHERE n.nspname = :s AND t.relname = :t ORDER BY ic.relname"
        ),
        {"s": schema, "t": table},
    ).all()
    return [TableIndex(r[0], r[1], bool(r[2]), bool(r[3]), r[4], r[5]) for r in rows]


def index_constraint_definition(cat: Catalog, schema: str, table: str, index: str) -> str | None:
    """pg_get_constraintdef of the constraint the table's index backs (an exclusion
    constraint's elements and operators, which the index's definition lacks), or None."""
    value = cat.conn.execute(
        text(
            "SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k "
            "JOIN pg_class t ON t.oid = k.conrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "JOIN pg_class i ON i.oid = k.conindid "
            "WHERE n.nspname = :s AND t.relname = :t AND i.relname = :i"
        ),
        {"s": schema, "t": table, "i": index},
    ).scalar()
    return None if value is None else str(value)
