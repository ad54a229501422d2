"""What the catalog says about a table as a whole: read-only questions.

set_replica_identity, the comments and create_index ask these (the replica identity and
the publications that rely on it, an index fit to be the identity, a comment as it was,
whether PostgreSQL takes an index's definition);
operations never run SQL themselves. SQLAlchemy is imported in the functions: a plan
loads without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from migrator.sqltext import ident, raw

if TYPE_CHECKING:
    from migrator.engine.catalog import Catalog


def replica_identity(cat: Catalog, schema: str, table: str) -> tuple[str, str | None]:
    """The table's replica identity as ``default``, ``full``, ``nothing`` or ``index``,
    and the index's name for ``index``."""
    from sqlalchemy import text

    row = cat.conn.execute(
        text(
            "SELECT c.relreplident::text, "
            "(SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
            " WHERE i.indrelid = c.oid AND i.indisreplident) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :t"
        ),
        {"s": schema, "t": table},
    ).one()
    kind = {"d": "default", "f": "full", "n": "nothing", "i": "index"}[row[0]]
    return kind, row[1]


def publications_of_changes(cat: Catalog, schema: str, table: str) -> list[str]:
    """Publications that publish the table's UPDATEs or DELETEs (which PostgreSQL refuses
    on a table whose replica identity cannot name the row)."""
    from sqlalchemy import text

    rows = cat.conn.execute(
        text(
            "SELECT DISTINCT p.pubname FROM pg_publication p "
            "JOIN pg_publication_tables pt ON pt.pubname = p.pubname "
            "WHERE pt.schemaname = :s AND pt.tablename = :t AND (p.pubupdate OR p.pubdelete) "
            "ORDER BY 1"
        ),
        {"s": schema, "t": table},
    ).all()
    return [r[0] for r in rows]


def identity_index_problem(cat: Catalog, schema: str, table: str, index: str) -> str | None:
    """Why an index cannot be a replica identity of the table, or None when it can.

    PostgreSQL's rules: a valid unique index of the table, not partial, no expression,
    not deferrable, every key column NOT NULL.
    """
    from sqlalchemy import text

    row = cat.conn.execute(
        text(
            "SELECT t.relname, i.indisunique, i.indisvalid, i.indpred IS NULL, "
            "i.indexprs IS NULL, i.indimmediate, "
            "ARRAY(SELECT a.attname::text FROM unnest(i.indkey[0:i.indnkeyatts - 1]) AS u(n) "
            "      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.n "
            "      WHERE NOT a.attnotnull ORDER BY 1) "
            "FROM pg_class ic JOIN pg_namespace n ON n.oid = ic.relnamespace "
            "JOIN pg_index i ON i.indexrelid = ic.oid JOIN pg_class t ON t.oid = i.indrelid "
            "WHERE n.nspname = :s AND ic.relname = :i"
        ),
        {"s": schema, "i": index},
    ).first()
    if row is None:
        return f"index {schema}.{index} does not exist"
    on, unique, valid, whole, plain, immediate, nullable = row
    if on != table:
        return f"index {index} is on {on}, not on {table}"
    if not unique:
        return f"index {index} is not unique"
    if not valid:
        return f"index {index} is INVALID (a failed concurrent build)"
    if not whole:
        return f"index {index} is partial"
    if not plain:
        return f"index {index} has an expression"
    if not immediate:
        return f"index {index} backs a deferrable constraint"
    if nullable:
        return f"index {index} has nullable column {', '.join(nullable)}"
    return None


def comment_of(cat: Catalog, schema: str, table: str, column: str | None = None) -> str | None:
    """The comment on a table, or on one of its columns."""
    from sqlalchemy import text

    if column is None:
        query = (
            "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :t"
        )
    else:
        query = (
            "SELECT col_description(c.oid, a.attnum) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = :c "
            "WHERE n.nspname = :s AND c.relname = :t"
        )
    value = cat.conn.execute(text(query), {"s": schema, "t": table, "c": column}).scalar()
    return None if value is None else str(value)


def index_build_error(
    cat: Catalog,
    schema: str,
    table: str,
    build: Callable[[str, str], str],
    columns: Sequence[tuple[str, str]] | None = None,
    extra: Mapping[str, str] | None = None,
) -> str | None:
    """Why PostgreSQL refuses an index (or an index-backed constraint), or None:
    ``build(schema, table)`` is its CREATE INDEX (or ALTER TABLE ... ADD CONSTRAINT) on a
    given table, run on an empty temporary copy of the table's columns (CREATE TEMP TABLE
    ... LIKE, with ``extra`` (name -> type SQL) added: columns earlier operations of the
    plan add; or, for a table the plan creates, ``columns`` as (name, type SQL)) inside a
    savepoint that is rolled back. The live table is neither locked beyond ACCESS SHARE
    nor scanned.
    """
    import psycopg
    from sqlalchemy.exc import DBAPIError

    if columns is None:
        cat.read_lock(schema, table, rows=False)  # LIKE takes ACCESS SHARE
    added = "".join(f", {ident(name)} {type_sql}" for name, type_sql in (extra or {}).items())
    shape = (
        f"LIKE {ident(schema, table)}{added}"
        if columns is None
        else ", ".join(f"{ident(name)} {type_sql}" for name, type_sql in columns)
    )
    try:
        with cat.conn.begin_nested() as sp:
            cat.conn.execute(raw(f"CREATE TEMP TABLE _migrator_probe ({shape})"))
            cat.conn.execute(raw(build("pg_temp", "_migrator_probe")))
            sp.rollback()
    except DBAPIError as exc:
        orig = exc.orig
        if getattr(orig, "sqlstate", None) == "55P03":
            raise  # a wait, not PostgreSQL's verdict on the index
        if isinstance(orig, psycopg.Error) and orig.diag.message_primary:
            return orig.diag.message_primary
        return str(orig).splitlines()[0]
    return None


def exclusion_conflicts_sql(
    schema: str, table: str, keys: Sequence[str], operators: Sequence[str], where: str | None
) -> str:
    """``SELECT count, example`` of the pairs of rows an exclusion constraint over
    ``keys`` (index keys as SQL) with ``operators`` would reject: the pairs for which
    every operator is true, each pair once. The example is both rows' keys as text.

    The keys are read in a subquery PostgreSQL pulls up, so an index of the same method
    over the same keys (the expand's helper index) serves the join's inner side.
    """
    names = [f"k{i}" for i in range(len(keys))]
    picked = ", ".join(f"{key} AS {n}" for key, n in zip(keys, names, strict=True))
    shown = f"'(' || concat_ws(', ', {', '.join(f'({k})::text' for k in keys)}) || ')' AS shown"
    rows = (
        f"(SELECT ctid AS r, {shown}, {picked} FROM {ident(schema, table)}"
        + (f" WHERE ({where})" if where else "")
        + ")"
    )
    pairs = " AND ".join(f"a.{n} {op} b.{n}" for n, op in zip(names, operators, strict=True))
    return (
        "SELECT count(*), min(a.shown || ' and ' || b.shown) "
        f"FROM {rows} a JOIN {rows} b ON a.r < b.r AND {pairs}"
    )


def exclusion_sweep_sql(
    schema: str,
    table: str,
    keys: Sequence[str],
    range_at: int,
    where: str | None,
) -> str:
    """``SELECT count, example`` of the rows that overlap a row before them, for an
    exclusion of ``&&`` over the range ``keys[range_at]`` and ``=`` over the other keys
    (index keys as SQL): zero exactly when the constraint finds no conflicting pair.

    Without an index: one sort. The rows of each group of equal keys (a NULL key, a NULL
    or empty range conflict with nothing) are ordered by their range's lower bound (the
    unbounded first; at one bound, the inclusive first); a row overlaps one before it
    exactly when the furthest upper bound before it passes its lower bound (or is
    unbounded, or it is unbounded below itself), or a row's inclusive upper bound equals
    its inclusive lower bound (a hash join). One sort and one hash join: n log n. The
    example is that row's keys as text.
    """
    named = [("rg" if i == range_at else f"e{i}") for i in range(len(keys))]
    eq = [n for n in named if n != "rg"]
    picked = [f"({k}) AS {n}" for k, n in zip(keys, named, strict=True)]
    # Only the example's row is shown: text made once, not for every row.
    shown = f"'(' || concat_ws(', ', {', '.join(f'{n}::text' for n in named)}) || ')'"
    kept = [f"{n} IS NOT NULL" for n in eq] + ["rg IS NOT NULL", "NOT isempty(rg)"]
    group = f"PARTITION BY {', '.join(eq)} " if eq else ""
    same = "".join(f" AND j.{n} = s.{n}" for n in eq)
    # The touching bounds by an equality join (hashed), not a correlated EXISTS: inside
    # an OR that would be a scan of the rows per row.
    return f"""WITH keyed AS (
  SELECT row_number() OVER () AS r, {", ".join(picked)}
  FROM {ident(schema, table)}{f" WHERE ({where})" if where else ""}
), kept AS (SELECT * FROM keyed WHERE {" AND ".join(kept)}),
touching AS (
  SELECT s.r FROM kept s JOIN kept j ON upper(j.rg) = lower(s.rg){same}
  WHERE lower_inc(s.rg) AND upper_inc(j.rg) AND j.r <> s.r
),
swept AS (
  SELECT *, count(*) OVER w AS before, bool_or(upper_inf(rg)) OVER w AS unbounded,
         max(upper(rg)) OVER w AS furthest
  FROM kept
  WINDOW w AS ({group}ORDER BY lower(rg) NULLS FIRST, lower_inc(rg) DESC, r
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
)
SELECT count(*), min({shown}) FROM swept
WHERE (before > 0 AND (lower_inf(rg) OR unbounded OR furthest > lower(rg)))
   OR r IN (SELECT r FROM touching)"""


def exclusion_sweep_key(
    cat: Catalog, schema: str, table: str, keys: Sequence[str], operators: Sequence[str]
) -> int | None:
    """Which key `exclusion_sweep_sql` sweeps, or None where it cannot be exact: the
    exclusion must be ``&&`` over exactly one key of a range type whose ``&&`` is
    range_overlaps, and ``=`` over the others, each the equality of its type's default
    btree operator class (the one grouping uses). Asked of the server, nothing run."""
    from sqlalchemy import text

    ranges = [i for i, op in enumerate(operators) if op == "&&"]
    if len(ranges) != 1 or any(op != "=" for i, op in enumerate(operators) if i != ranges[0]):
        return None
    cat.read_lock(schema, table)
    names = [f"k{i}" for i in range(len(keys))]
    picked = ", ".join(f"({k}) AS {n}" for k, n in zip(keys, names, strict=True))
    types = cat.conn.execute(
        text(
            f"SELECT {', '.join(f'pg_typeof(x.{n})::oid' for n in names)} "
            f"FROM (SELECT {picked} FROM {ident(schema, table)} LIMIT 0) AS x "
            "RIGHT JOIN (VALUES (1)) AS v (one) ON true"
        )
    ).one()
    for i, type_oid in enumerate(types):
        if i == ranges[0]:
            query = (
                "SELECT t.typtype = 'r' AND NOT EXISTS (SELECT FROM pg_operator o "
                "WHERE o.oprname = '&&' AND o.oprleft = t.oid AND o.oprright = t.oid "
                "AND o.oprcode <> 'range_overlaps'::regproc) FROM pg_type t WHERE t.oid = :t"
            )
        else:
            query = (
                "SELECT EXISTS (SELECT FROM pg_operator o "
                "JOIN pg_amop a ON a.amopopr = o.oid AND a.amopstrategy = 3 "
                "JOIN pg_opclass c ON c.opcfamily = a.amopfamily AND c.opcdefault "
                "AND c.opcintype = :t "
                "JOIN pg_am m ON m.oid = c.opcmethod AND m.amname = 'btree' "
                "WHERE o.oprname = '=' AND o.oprleft = :t AND o.oprright = :t)"
            )
        if not cat.conn.execute(text(query), {"t": int(type_oid)}).scalar():
            return None
    return ranges[0]


def exclusion_sweep(
    cat: Catalog,
    schema: str,
    table: str,
    keys: Sequence[str],
    range_at: int,
    where: str | None,
) -> tuple[int, str | None]:
    """`exclusion_sweep_sql` run: rows overlapping one before them, and one of them."""

    cat.read_lock(schema, table)
    row = cat.conn.execute(raw(exclusion_sweep_sql(schema, table, keys, range_at, where))).one()
    return int(row[0]), (str(row[1]) if row[1] is not None else None)


def exclusion_conflicts(
    cat: Catalog,
    schema: str,
    table: str,
    keys: Sequence[str],
    operators: Sequence[str],
    where: str | None,
) -> tuple[int, str | None]:
    """How many pairs of rows the exclusion would reject, and one of them (see
    `exclusion_conflicts_sql`); read only."""

    cat.read_lock(schema, table)
    row = cat.conn.execute(
        raw(exclusion_conflicts_sql(schema, table, keys, operators, where))
    ).one()
    return int(row[0]), (str(row[1]) if row[1] is not None else None)


def relation_bytes(cat: Catalog, schema: str, table: str) -> int:
    """The table's size on disk (its main fork), from the catalog; no scan."""
    from sqlalchemy import text

    cat.read_lock(schema, table, rows=False)  # pg_relation_size takes ACCESS SHARE
    return int(
        cat.conn.execute(
            text("SELECT pg_relation_size(to_regclass(:t))"), {"t": ident(schema, table)}
        ).scalar()
        or 0
    )
