"""What the catalog says about one column and what depends on it: read-only questions.

rename_column and alter_column ask these while they build their steps (the indexes,
constraints and views to carry over to a shadow column, the saved record of the column
before the expand); operations never run SQL themselves. A question that may fail (a
type, an expression) is asked inside a savepoint that is rolled back. SQLAlchemy is
imported in the functions: a plan loads without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migrator.sqltext import ident, raw

if TYPE_CHECKING:
    from migrator.engine.catalog import Catalog


@dataclass(frozen=True)
class ColumnFacts:
    """What the catalog says about one column, as much as the two operations need."""

    name: str
    attnum: int
    type: str
    type_oid: int
    typmod: int
    not_null: bool
    default: str | None
    identity: str
    generated: str
    collation: str | None
    comment: str | None
    relkind: str
    table_oid: int


def column_facts(cat: Catalog, schema: str, table: str, column: str) -> ColumnFacts | None:
    """One column of a table, or None when the table or the column is absent."""
    from sqlalchemy import text

    cat.read_lock(schema, table, rows=False)  # pg_get_expr takes ACCESS SHARE
    row = cat.conn.execute(
        text(
            "SELECT a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), a.atttypid, "
            "a.atttypmod, a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, "
            "a.attgenerated::text, "
            "CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation "
            "     THEN (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname) "
            "           FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace "
            "           WHERE co.oid = a.attcollation) END, "
            "col_description(c.oid, a.attnum), c.relkind::text, c.oid "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE n.nspname = :s AND c.relname = :t AND a.attname = :c "
            "AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"s": schema, "t": table, "c": column},
    ).first()
    if row is None:
        return None
    return ColumnFacts(
        name=row[0],
        attnum=int(row[1]),
        type=row[2],
        type_oid=int(row[3]),
        typmod=int(row[4]),
        not_null=bool(row[5]),
        default=row[6],
        identity=row[7] or "",
        generated=row[8] or "",
        collation=row[9],
        comment=row[10],
        relkind=row[11],
        table_oid=int(row[12]),
    )


@dataclass(frozen=True)
class IndexFacts:
    """An index that uses the column; ``constraint`` is the PK/UNIQUE it backs, if any."""

    name: str
    definition: str
    unique: bool
    primary: bool
    constraint: str | None
    constraint_kind: str | None


def column_indexes(cat: Catalog, facts: ColumnFacts) -> list[IndexFacts]:
    """Every index of the table whose keys, INCLUDE list, expressions or predicate use it."""
    from sqlalchemy import text

    rows = cat.conn.execute(
        text(
            "SELECT ic.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary, "
            "k.conname, k.contype::text "
            "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
            "LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid "
            "  AND k.contype IN ('p', 'u') "
            "WHERE i.indrelid = :t AND (:a = ANY (i.indkey::int2[]) "
            "  OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
            "    AND d.objid = i.indexrelid AND d.refobjid = :t AND d.refobjsubid = :a)) "
            "ORDER BY ic.relname"
        ),
        {"t": facts.table_oid, "a": facts.attnum},
    ).all()
    return [IndexFacts(r[0], r[1], bool(r[2]), bool(r[3]), r[4], r[5]) for r in rows]


@dataclass(frozen=True)
class ConstraintFacts:
    """A CHECK or FOREIGN KEY that uses the column (own), or a foreign key pointing at it."""

    name: str
    kind: str
    definition: str
    schema: str
    table: str
    incoming: bool
    # The table a foreign key references (None for a CHECK).
    ref_schema: str | None = None
    ref_table: str | None = None


def column_constraints(cat: Catalog, facts: ColumnFacts) -> list[ConstraintFacts]:
    """CHECKs and foreign keys of the table over the column, and foreign keys referencing it."""
    from sqlalchemy import text

    rows = cat.conn.execute(
        text(
            "SELECT k.conname, k.contype::text, pg_get_constraintdef(k.oid), n.nspname, "
            "c.relname, k.confrelid = :t AND :a = ANY (k.confkey), rn.nspname, r.relname "
            "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_class r ON r.oid = k.confrelid "
            "LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace "
            # (a partition's copy of its parent's foreign key goes with the parent's)
            "WHERE k.conparentid = 0 AND ("
            "(k.conrelid = :t AND :a = ANY (k.conkey) AND k.contype IN ('c', 'f')) "
            "OR (k.contype = 'f' AND k.confrelid = :t AND :a = ANY (k.confkey))) "
            "ORDER BY 6, k.conname"
        ),
        {"t": facts.table_oid, "a": facts.attnum},
    ).all()
    return [ConstraintFacts(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7]) for r in rows]


@dataclass(frozen=True)
class ViewFacts:
    """A view that depends on the column, directly or through other views."""

    schema: str
    name: str
    kind: str
    definition: str
    owner: str
    options: list[str]
    comment: str | None


_VIEWS_SQL = """
WITH RECURSIVE deps(oid, depth) AS (
    SELECT r.ev_class, 1
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = :t AND d.refobjsubid = :a AND r.ev_class <> :t
  UNION
    SELECT r.ev_class, deps.depth + 1
    FROM deps JOIN pg_depend d ON d.refobjid = deps.oid AND d.refclassid = 'pg_class'::regclass
    JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class <> deps.oid AND deps.depth < 50
)
SELECT n.nspname, c.relname, c.relkind::text, pg_get_viewdef(c.oid),
       pg_get_userbyid(c.relowner), coalesce(c.reloptions, '{}'),
       obj_description(c.oid, 'pg_class'), max(deps.depth)
FROM deps JOIN pg_class c ON c.oid = deps.oid JOIN pg_namespace n ON n.oid = c.relnamespace
GROUP BY c.oid, n.nspname, c.relname, c.relkind
ORDER BY max(deps.depth), n.nspname, c.relname
"""


def dependent_views(cat: Catalog, facts: ColumnFacts) -> list[ViewFacts]:
    """Views over the column, those nearest the table first (the order to create them)."""
    from sqlalchemy import text

    rows = cat.conn.execute(text(_VIEWS_SQL), {"t": facts.table_oid, "a": facts.attnum}).all()
    return [ViewFacts(r[0], r[1], r[2], r[3], r[4], list(r[5]), r[6]) for r in rows]


def other_dependants(cat: Catalog, facts: ColumnFacts) -> list[str]:
    """Dependants neither operation knows how to carry over (triggers, policies, statistics...).

    Indexes, constraints, views, the default and the owned sequence are handled; anything
    else is named so the plan author can deal with it, never dropped behind CASCADE.
    """
    from sqlalchemy import text

    rows = cat.conn.execute(
        text(
            "SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) "
            "FROM pg_depend d WHERE d.refclassid = 'pg_class'::regclass "
            "AND d.refobjid = :t AND d.refobjsubid = :a AND d.deptype IN ('n', 'a') "
            "AND d.classid NOT IN ('pg_attrdef'::regclass, 'pg_constraint'::regclass) "
            # views are re-created; a rule on the table itself is not
            "AND NOT (d.classid = 'pg_rewrite'::regclass AND EXISTS (SELECT 1 FROM pg_rewrite r "
            "  JOIN pg_class v ON v.oid = r.ev_class WHERE r.oid = d.objid "
            "  AND v.relkind IN ('v', 'm') AND r.ev_class <> :t)) "
            "AND NOT (d.classid = 'pg_class'::regclass AND EXISTS (SELECT 1 FROM pg_class x "
            "  WHERE x.oid = d.objid AND x.relkind IN ('S', 'i'))) "
            "AND NOT (d.classid = 'pg_trigger'::regclass AND EXISTS (SELECT 1 FROM pg_trigger g "
            "  WHERE g.oid = d.objid AND g.tgname LIKE '\\_migrator\\_%')) "
            "ORDER BY 1"
        ),
        {"t": facts.table_oid, "a": facts.attnum},
    ).all()
    return [r[0] for r in rows]


def owned_sequence(cat: Catalog, schema: str, table: str, column: str) -> str | None:
    """The sequence the column owns (serial), quoted, or None."""
    from sqlalchemy import text

    value = cat.conn.execute(
        text("SELECT pg_get_serial_sequence(:t, :c)"),
        {"t": ident(schema, table), "c": column},
    ).scalar()
    return str(value) if value else None


def expression_error_with(
    cat: Catalog,
    schema: str,
    table: str,
    expression: str,
    cast_to: str,
    column: str,
    column_type: str,
    extra: Mapping[str, str] | None = None,
) -> str | None:
    """Why ``expression`` does not plan over the table's rows with ``column`` retyped.

    For `down`: its bare column name means the new-typed value. ``extra`` (column ->
    type) are columns an earlier operation of the plan adds, read as NULL. Planned,
    never run, inside a savepoint that is rolled back.
    """
    from sqlalchemy.exc import DBAPIError

    cat.read_lock(schema, table)
    cols = [c.name for c in cat.columns(schema, table) if c.name != column]
    added = [f"NULL::{t} AS {ident(c)}" for c, t in (extra or {}).items() if c != column]
    select = ", ".join(
        [*(ident(c) for c in cols), *added, f"NULL::{column_type} AS {ident(column)}"]
    )
    sql = (
        f"EXPLAIN SELECT ({expression})::{cast_to} "
        f"FROM (SELECT {select} FROM {ident(schema, table)}) AS {ident(table)}"
    )
    try:
        with cat.conn.begin_nested() as sp:
            cat.conn.execute(raw(sql))
            sp.rollback()
    except DBAPIError as exc:
        orig: Any = exc.orig
        if getattr(orig, "sqlstate", None) == "55P03":
            raise  # a wait, not PostgreSQL's verdict on the expression
        diag = getattr(orig, "diag", None)
        if diag is not None and diag.message_primary:
            return str(diag.message_primary)
        return str(orig).splitlines()[0]
    return None


def types_without_equality(cat: Catalog, types: list[str]) -> frozenset[str]:
    """The types among these that IS DISTINCT FROM cannot compare (no equality operator).

    Asked of the server: each comparison is planned inside a savepoint rolled back.
    """
    from sqlalchemy.exc import DBAPIError

    missing = set()
    for type_sql in dict.fromkeys(types):
        try:
            with cat.conn.begin_nested() as sp:
                cat.conn.execute(
                    raw(f"EXPLAIN SELECT NULL::{type_sql} IS DISTINCT FROM NULL::{type_sql}")
                )
                sp.rollback()
        except DBAPIError:
            missing.add(type_sql)
    return frozenset(missing)


def key_type_error(
    cat: Catalog, column_type: str, *, unique: bool, references: str | None
) -> str | None:
    """Why PostgreSQL cannot build a unique constraint (``unique``) or a foreign key to a
    column of type ``references`` over a column of ``column_type``, or None.

    Tried for real on temporary tables inside a savepoint that is rolled back: the
    server's own rules (a default btree operator class; an equality operator between
    the two key types, or an implicit cast), without a lock on any table of the plan.
    """
    from sqlalchemy.exc import DBAPIError

    sqls = []
    if unique:
        sqls.append(f"CREATE TEMPORARY TABLE _migrator_uq (c {column_type} UNIQUE) ON COMMIT DROP")
    if references is not None:
        sqls += [
            f"CREATE TEMPORARY TABLE _migrator_pk (k {references} PRIMARY KEY) ON COMMIT DROP",
            f"CREATE TEMPORARY TABLE _migrator_fk (c {column_type} REFERENCES _migrator_pk (k)) "
            "ON COMMIT DROP",
        ]
    try:
        with cat.conn.begin_nested() as sp:
            for sql in sqls:
                cat.conn.execute(raw(sql))
            sp.rollback()
    except DBAPIError as exc:
        diag: Any = getattr(exc.orig, "diag", None)
        if diag is not None and diag.message_detail:
            return str(diag.message_detail).rstrip(".")
        if diag is not None and diag.message_primary:
            return str(diag.message_primary)
        return str(exc.orig).splitlines()[0]
    return None


def exclusion_constraints(cat: Catalog, facts: ColumnFacts) -> list[str]:
    """The table's exclusion constraints that use the column, by name."""
    from sqlalchemy import text

    rows = cat.conn.execute(
        text(
            "SELECT conname FROM pg_constraint WHERE conrelid = :t "
            "AND contype = 'x' AND :a = ANY (conkey) ORDER BY conname"
        ),
        {"t": facts.table_oid, "a": facts.attnum},
    ).all()
    return [str(r[0]) for r in rows]


def not_null_constraint(cat: Catalog, facts: ColumnFacts) -> str | None:
    """The name of the column's NOT NULL constraint (PostgreSQL 18 names them), if any."""
    from sqlalchemy import text

    value = cat.conn.execute(
        text(
            "SELECT conname FROM pg_constraint WHERE conrelid = :t AND contype = 'n' "
            "AND conkey = ARRAY[:a]::int2[]"
        ),
        {"t": facts.table_oid, "a": facts.attnum},
    ).scalar()
    return str(value) if value else None


def foreign_key_target(cat: Catalog, schema: str, table: str, name: str) -> tuple[str, str] | None:
    """The (schema, table) a table's foreign key references; None when the table has no
    foreign key of that name."""
    from sqlalchemy import text

    row = cat.conn.execute(
        text(
            "SELECT rn.nspname, r.relname FROM pg_constraint k "
            "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_class r ON r.oid = k.confrelid "
            "JOIN pg_namespace rn ON rn.oid = r.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :t AND k.conname = :c AND k.contype = 'f'"
        ),
        {"s": schema, "t": table, "c": name},
    ).first()
    return None if row is None else (str(row[0]), str(row[1]))


def function_exists(cat: Catalog, schema: str, name: str) -> bool:
    """True when the schema has a function of that name (any arguments)."""
    from sqlalchemy import text

    row = cat.conn.execute(
        text(
            "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = :s AND p.proname = :p"
        ),
        {"s": schema, "p": name},
    ).first()
    return row is not None


def function_text(cat: Catalog, function: str) -> str:
    """What a function of no arguments returning text returns; ``function`` is its quoted,
    qualified name (one migrator made itself: alter_column's saved record)."""
    from sqlalchemy import text

    return str(cat.conn.execute(text(f"SELECT {function}()")).scalar_one())


@dataclass(frozen=True)
class SequenceFacts:
    """A sequence's options as pg_sequence holds them (``type`` as format_type spells it)."""

    schema: str
    name: str
    type: str
    start: int
    increment: int
    minvalue: int
    maxvalue: int
    cache: int
    cycle: bool


def sequence_facts(cat: Catalog, sequence: str) -> SequenceFacts | None:
    """The options of a sequence named by its quoted, qualified name (as
    `owned_sequence` gives it), or None when there is none."""
    from sqlalchemy import text

    row = cat.conn.execute(
        text(
            "SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, "
            "s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle "
            "FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE s.seqrelid = to_regclass(:s)"
        ),
        {"s": sequence},
    ).first()
    if row is None:
        return None
    return SequenceFacts(
        row[0],
        row[1],
        row[2],
        int(row[3]),
        int(row[4]),
        int(row[5]),
        int(row[6]),
        int(row[7]),
        bool(row[8]),
    )


@dataclass(frozen=True)
class Grant:
    """One privilege granted on a relation or a column (``grantee`` None: PUBLIC).

    ``grantor`` None: the relation's owner, whom a GRANT by a superuser or by the owner
    records. ``becomable``: migrator's role may SET ROLE to the grantor, who may use the
    schema (so a GRANT as that role can record it). ``table_option``: for a column's
    privilege, the grantor holds the grant option for it on the whole table, so it has
    it on a new column too.
    """

    privilege: str
    grantee: str | None
    grantable: bool
    grantor: str | None = None
    becomable: bool = False
    table_option: bool = False


def grants_on(cat: Catalog, relation: str, column: str | None = None) -> list[Grant]:
    """The privileges granted on a relation (named by its quoted, qualified name) or on
    one of its columns (GRANT SELECT (col)), to others than its owner, whose own
    privileges come with ownership."""
    from sqlalchemy import text

    acl, where = (
        ("c.relacl", "")
        if column is None
        else (
            "a.attacl",
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = :c AND NOT a.attisdropped",
        )
    )
    # SET ROLE needs membership on 15, the SET option of it from 16 on.
    become = "SET" if cat.server_version >= 160000 else "MEMBER"
    table_option = (
        "false"
        if column is None
        else "EXISTS (SELECT FROM aclexplode(c.relacl) AS y WHERE y.grantee = x.grantor "
        "AND y.privilege_type = x.privilege_type AND y.is_grantable)"
    )
    rows = cat.conn.execute(
        text(
            "SELECT x.privilege_type, CASE WHEN x.grantee = 0 THEN NULL "
            "ELSE pg_get_userbyid(x.grantee) END AS grantee, x.is_grantable, "
            "CASE WHEN x.grantor <> c.relowner THEN pg_get_userbyid(x.grantor) END, "
            f"x.grantor <> c.relowner AND pg_has_role(x.grantor, '{become}') "
            "AND has_schema_privilege(x.grantor, c.relnamespace, 'USAGE'), "
            f"x.grantor <> c.relowner AND {table_option} "
            f"FROM pg_class c {where} CROSS JOIN LATERAL aclexplode({acl}) AS x "
            "WHERE c.oid = to_regclass(:r) AND x.grantee <> c.relowner "
            "ORDER BY 2 NULLS FIRST, 1"
        ),
        {"r": relation, "c": column},
    ).all()
    return [
        Grant(
            str(r[0]),
            None if r[1] is None else str(r[1]),
            bool(r[2]),
            None if r[3] is None else str(r[3]),
            bool(r[4]),
            bool(r[5]),
        )
        for r in rows
    ]


def relation_comment(cat: Catalog, relation: str) -> str | None:
    """The COMMENT on a relation (a sequence too), named by its quoted, qualified name."""
    from sqlalchemy import text

    value = cat.conn.execute(
        text("SELECT obj_description(to_regclass(:r), 'pg_class')"), {"r": relation}
    ).scalar()
    return None if value is None else str(value)


def generated_readers(cat: Catalog, facts: ColumnFacts) -> list[str]:
    """The table's generated columns whose expression reads the column, by name."""
    from sqlalchemy import text

    rows = cat.conn.execute(
        text(
            "SELECT DISTINCT a.attname FROM pg_depend d "
            "JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid "
            "JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum "
            "WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = :t "
            "AND d.refobjsubid = :a AND a.attgenerated <> '' AND a.attnum <> :a ORDER BY 1"
        ),
        {"t": facts.table_oid, "a": facts.attnum},
    ).all()
    return [str(r[0]) for r in rows]


def default_breaks_key(
    cat: Catalog,
    schema: str,
    table: str,
    column_type: str,
    default: str,
    ref_table: str,
    ref_column: str,
) -> bool:
    """True when a new column's constant ``default`` (SQL) would give every row of a
    table that has rows a value ``ref_table.ref_column`` does not hold, so its foreign
    key could never be validated. False for a NULL default, and where the default does
    not evaluate (the ADD COLUMN reports that); asked inside a savepoint rolled back."""
    from sqlalchemy.exc import DBAPIError

    cat.read_lock(schema, table)
    cat.read_lock(schema, ref_table)
    sql = (
        f"SELECT EXISTS (SELECT 1 FROM {ident(schema, table)}) AND d.v IS NOT NULL "
        f"AND NOT EXISTS (SELECT 1 FROM {ident(schema, ref_table)} r "
        f"WHERE r.{ident(ref_column)} = d.v) FROM (SELECT ({default})::{column_type} AS v) AS d"
    )
    try:
        with cat.conn.begin_nested() as sp:
            breaks = bool(cat.conn.execute(raw(sql)).scalar_one())
            sp.rollback()
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":
            raise  # a wait, not PostgreSQL's verdict on the default
        return False
    return breaks
