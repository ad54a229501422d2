"""What the static checks need to know of one phase's schema, read once from pg_catalog.

One snapshot per phase database: relations (with whether a view takes writes), their
columns (NOT NULL, default, identity, generated), unique indexes (partial ones with their
predicate), constraints (CHECK, FOREIGN KEY, UNIQUE, PRIMARY KEY with their definition),
BEFORE INSERT / UPDATE triggers and the sync triggers migrator installed. The checks then answer from memory, so a thousand queries cost
no more catalog round trips than one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pglast
import psycopg
from pglast import ast

from migrator.ops.sql import walk_nodes

# pg_relation_is_updatable returns a bit per command: 1 << CMD_UPDATE (2), CMD_INSERT (3),
# CMD_DELETE (4); information_schema reads it the same way.
UPDATE_BIT, INSERT_BIT, DELETE_BIT = 1 << 2, 1 << 3, 1 << 4

_SYSTEM = "('pg_catalog', 'information_schema', 'migrator', 'pg_toast')"

# The relations a snapshot holds. The index and constraint queries read only theirs: the
# catalogs' own (a few hundred, each through pg_get_indexdef) would be read to be dropped.
_RELATIONS = (
    "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN {_SYSTEM} "
    "AND n.nspname NOT LIKE 'pg_temp%'"
)


@dataclass(frozen=True)
class Column:
    """A column of a relation at one phase."""

    name: str
    type: str
    not_null: bool
    has_default: bool
    identity: bool
    generated: bool
    default: str | None = None  # the default expression, as pg_get_expr writes it
    type_oid: int = 0  # atttypid: a domain's rules are the snapshot's `domain(type_oid)`

    @property
    def required(self) -> bool:
        """An INSERT that leaves this column out fails."""
        return self.not_null and not (self.has_default or self.identity or self.generated)


@dataclass(frozen=True)
class Constraint:
    """A CHECK (c), FOREIGN KEY (f), UNIQUE (u), PRIMARY KEY (p) or EXCLUDE (x) constraint."""

    name: str
    kind: str  # pg_constraint.contype
    columns: tuple[str, ...]
    definition: str  # pg_get_constraintdef: what a phase is compared by
    expression: str | None  # a CHECK's expression, over the columns' bare names
    # A FOREIGN KEY's referenced table (oid), its columns there, and confupdtype /
    # confdeltype / confmatchtype ('a' no action, 'r' restrict, 'c' cascade, ...).
    ref_oid: int | None = None
    ref_columns: tuple[str, ...] = ()
    on_update: str = ""
    on_delete: str = ""
    match: str = ""
    # An EXCLUDE's elements: each one's SQL (a column's quoted name or an expression over
    # the table's bare column names, as pg_get_indexdef writes it), the columns it reads,
    # and its operator (``OPERATOR(pg_catalog.=)``); ``columns`` is then every column an
    # element reads, in order. Its index predicate (``where``), if any, and its columns.
    elements: tuple[str, ...] = ()
    element_columns: tuple[tuple[str, ...], ...] = ()
    plain: tuple[bool, ...] = ()  # the element is a column, not an expression
    operators: tuple[str, ...] = ()
    predicate: str | None = None
    predicate_columns: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[object, ...]:
        """What makes two phases' constraints the same one: the definition, except that a
        foreign key names its table by oid (the text changes when the table is renamed)
        and leaves its validity out (VALIDATE does not change what it rejects)."""
        if self.kind == "f":
            return (
                "f",
                self.columns,
                self.ref_oid,
                self.ref_columns,
                self.on_update,
                self.on_delete,
                self.match,
            )
        return (self.kind, self.definition)


@dataclass(frozen=True)
class Domain:
    """A domain's rules, its base domains' included: what a value cast to it must meet."""

    name: str  # format_type, as messages name it
    not_null: bool
    has_default: bool  # the nearest default along the chain
    checks: tuple[tuple[str, str], ...]  # (constraint name, definition) of its CHECKs
    # CHECKs that call a function of the project's that is not immutable (it may read a
    # table, which the scratch databases hold empty): their verdict here is not certain.
    uncertain: frozenset[str] = frozenset()
    base: str = ""  # the type under the chain of domains, with its typmod (format_type)
    # Each CHECK's expression (pg_get_expr, VALUE as written), by name: tried alone, since
    # a cast to the domain stops at the first CHECK that fails, in PostgreSQL's order.
    expressions: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Holder:
    """A type that holds a domain without being one: an array of a domain (``element``),
    or a composite type with fields of a domain (``fields``: name, type, type oid of each
    field, in order)."""

    element: int = 0
    fields: tuple[tuple[str, str, int], ...] = ()


@dataclass
class Relation:
    """A table, view or other relation at one phase."""

    schema: str
    name: str
    kind: str  # pg_class.relkind
    updatable: int  # pg_relation_is_updatable bits (views; all bits for tables)
    columns: list[Column] = field(default_factory=list)
    unique_indexes: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    constraints: set[str] = field(default_factory=set)
    before_insert_triggers: list[str] = field(default_factory=list)
    before_update_triggers: list[str] = field(default_factory=list)
    # (index, columns, predicate) of partial unique indexes over plain columns
    partial_unique: list[tuple[str, frozenset[str], str]] = field(default_factory=list)
    checked: list[Constraint] = field(default_factory=list)
    # Unique indexes over expressions or with a predicate, as keys with elements (their
    # operators ``=``); the plain ones are ``unique_indexes``.
    unique_keys: list[Constraint] = field(default_factory=list)
    # The functions of migrator's sync triggers on the table, as errors name them
    # (``migrator.fn``): a write's value is converted there.
    sync_functions: list[str] = field(default_factory=list)
    oid: int = 0  # the same in every phase: the phase databases are template copies
    # An auto-updatable view's one base relation, and the base column under each of the
    # view's columns (None: not a plain column); a write through the view is its base's.
    base_oid: int | None = None
    base_columns: tuple[str | None, ...] = ()

    @property
    def qualified(self) -> str:
        """schema.name, for messages."""
        return f"{self.schema}.{self.name}"

    @property
    def is_view(self) -> bool:
        """A view or materialized view."""
        return self.kind in ("v", "m")

    def column(self, name: str) -> Column | None:
        """A column by name."""
        for col in self.columns:
            if col.name == name:
                return col
        return None

    def signature(self) -> tuple[tuple[str, str], ...]:
        """The columns in order with their types: what SELECT * returns."""
        return tuple((c.name, c.type) for c in self.columns)


@dataclass
class Snapshot:
    """The relations of one phase, by (schema, name)."""

    phase: str
    relations: dict[tuple[str, str], Relation]
    search_path: tuple[str, ...]
    by_oid: dict[int, Relation] = field(default_factory=dict)
    domains: dict[int, Domain] = field(default_factory=dict)  # by the domain type's oid
    holders: dict[int, Holder] = field(default_factory=dict)  # by the holding type's oid

    def domain(self, type_oid: int) -> Domain | None:
        """The rules of a column's type when it is a domain."""
        return self.domains.get(type_oid)

    def resolve(self, schema: str | None, name: str) -> Relation | None:
        """A relation as a query names it: qualified, or found along the search path."""
        if schema:
            return self.relations.get((schema, name))
        for candidate in self.search_path:
            found = self.relations.get((candidate, name))
            if found is not None:
                return found
        return None


def take(conn: psycopg.Connection[Any], phase: str, search_path: tuple[str, ...]) -> Snapshot:
    """Read the snapshot of the database ``conn`` is connected to."""
    relations: dict[tuple[str, str], Relation] = {}
    by_oid: dict[int, Relation] = {}
    rows = conn.execute(
        "SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text, "
        "CASE WHEN c.relkind IN ('r', 'p') THEN 28 "
        "     WHEN c.relkind IN ('v', 'f') THEN pg_relation_is_updatable(c.oid, true) "
        "     ELSE 0 END "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN {_SYSTEM} "
        "AND n.nspname NOT LIKE 'pg_temp%'"
    ).fetchall()
    for oid, schema, name, kind, updatable in rows:
        rel = Relation(str(schema), str(name), str(kind), int(updatable), oid=int(oid))
        relations[(rel.schema, rel.name)] = rel
        by_oid[int(oid)] = rel
    for (
        oid,
        name,
        type_,
        not_null,
        has_default,
        identity,
        generated,
        default,
        type_oid,
    ) in conn.execute(
        "SELECT a.attrelid::int8, a.attname, format_type(a.atttypid, a.atttypmod), "
        "a.attnotnull, a.atthasdef, a.attidentity <> '', a.attgenerated <> '', "
        "pg_get_expr(d.adbin, d.adrelid), a.atttypid::int8 "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        f"WHERE a.attnum > 0 AND NOT a.attisdropped AND n.nspname NOT IN {_SYSTEM} "
        "AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY a.attrelid, a.attnum"
    ).fetchall():
        found = by_oid.get(int(oid))
        if found is not None:
            found.columns.append(
                Column(
                    str(name),
                    str(type_),
                    bool(not_null),
                    bool(has_default),
                    bool(identity),
                    bool(generated),
                    None if default is None else str(default),
                    int(type_oid),
                )
            )
    # Unique indexes over plain columns: what the messages about an ON CONFLICT target
    # name (the server itself decides whether one is an arbiter). One over expressions or
    # with a predicate is also kept as a key the probes judge as they judge an EXCLUDE.
    for oid, index, columns, predicate, plain, keys, pretty, definition in conn.execute(
        "SELECT i.indrelid::int8, ic.relname, "
        "array(SELECT a.attname FROM unnest(i.indkey) k JOIN pg_attribute a "
        "      ON a.attrelid = i.indrelid AND a.attnum = k), "
        "pg_get_expr(i.indpred, i.indrelid), i.indexprs IS NULL, "
        "array(SELECT pg_get_indexdef(i.indexrelid, k, true) "
        "      FROM generate_series(1, i.indnkeyatts) AS k ORDER BY k), "
        "pg_get_expr(i.indpred, i.indrelid, true), pg_get_indexdef(i.indexrelid) "
        "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
        f"WHERE i.indisunique AND i.indrelid IN ({_RELATIONS})"
    ).fetchall():
        found = by_oid.get(int(oid))
        if found is None:
            continue
        if plain and predicate is None:
            found.unique_indexes.append((str(index), frozenset(columns)))
        elif plain:
            found.partial_unique.append((str(index), frozenset(columns), str(predicate)))
        nulls = " NULLS NOT DISTINCT" in str(definition)
        if nulls or (plain and predicate is None):
            continue  # NULLs that clash: not judged as an exclusion's NULLs are
        keys = list(keys)
        described = f"unique index on ({', '.join(keys)})" + (
            f" WHERE {pretty}" if pretty is not None else ""
        )
        # Compared by what it is, not its name: the key of an added one is new.
        key = Constraint(str(index), "u", (), described, None)
        found.unique_keys.append(_exclusion(key, found, keys, ["="] * len(keys), pretty))
    for (
        oid,
        name,
        kind,
        columns,
        definition,
        expression,
        ref_oid,
        ref_columns,
        on_update,
        on_delete,
        match,
        operators,
        elements,
        predicate,
    ) in conn.execute(
        "SELECT conrelid::int8, conname, contype::text, "
        "array(SELECT a.attname FROM unnest(conkey) WITH ORDINALITY AS k(n, i) "
        "      JOIN pg_attribute a ON a.attrelid = conrelid AND a.attnum = k.n ORDER BY k.i), "
        "pg_get_constraintdef(oid), "
        "CASE WHEN contype = 'c' THEN pg_get_expr(conbin, conrelid) END, "
        "NULLIF(confrelid, 0)::int8, "
        "array(SELECT a.attname FROM unnest(confkey) k JOIN pg_attribute a "
        "      ON a.attrelid = confrelid AND a.attnum = k), "
        "confupdtype::text, confdeltype::text, confmatchtype::text, "
        "CASE WHEN contype = 'x' THEN array("
        "  SELECT format('OPERATOR(%I.%s)', n.nspname, o.oprname) "
        "  FROM unnest(conexclop) WITH ORDINALITY AS e(op, i) "
        "  JOIN pg_operator o ON o.oid = e.op JOIN pg_namespace n ON n.oid = o.oprnamespace "
        "  ORDER BY e.i) END, "
        "CASE WHEN contype = 'x' THEN array(SELECT pg_get_indexdef(conindid, k, true) "
        "  FROM pg_index i, generate_series(1, i.indnkeyatts) AS k "
        "  WHERE i.indexrelid = conindid ORDER BY k) END, "
        "CASE WHEN contype = 'x' THEN (SELECT pg_get_expr(indpred, indrelid, true) "
        "  FROM pg_index WHERE indexrelid = conindid) END "
        f"FROM pg_constraint WHERE conrelid IN ({_RELATIONS})"
    ).fetchall():
        found = by_oid.get(int(oid))
        if found is None:
            continue
        found.constraints.add(str(name))
        if kind not in ("c", "f", "u", "p", "x"):
            continue
        con = Constraint(
            str(name),
            str(kind),
            tuple(columns),
            str(definition),
            expression,
            None if ref_oid is None else int(ref_oid),
            tuple(ref_columns),
            str(on_update).strip(),
            str(on_delete).strip(),
            str(match).strip(),
        )
        if kind == "x":
            con = _exclusion(con, found, list(elements or ()), list(operators or ()), predicate)
        found.checked.append(con)
    # tgtype bits: 1 row, 2 before, 4 insert, 16 update (see pg_trigger.h).
    for oid, name, tgtype, function in conn.execute(
        "SELECT t.tgrelid::int8, t.tgname, t.tgtype::int, "
        "CASE WHEN n.nspname = 'migrator' THEN n.nspname || '.' || p.proname END "
        "FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE NOT t.tgisinternal AND t.tgtype & 3 = 3 AND t.tgenabled <> 'D'"
    ).fetchall():
        found = by_oid.get(int(oid))
        if found is None:
            continue
        if tgtype & 4:
            found.before_insert_triggers.append(str(name))
        if tgtype & 16:
            found.before_update_triggers.append(str(name))
        if function is not None and str(function) not in found.sync_functions:
            found.sync_functions.append(str(function))
    _view_bases(conn, by_oid)
    domains = _domains(conn)
    return Snapshot(phase, relations, search_path, by_oid, domains, _holders(conn, domains))


def _domains(conn: psycopg.Connection[Any]) -> dict[int, Domain]:
    """Every domain outside the system schemas with its rules, a domain over a domain
    holding its base's too (a value cast to it meets them all)."""
    rows = {
        int(oid): (
            str(name),
            bool(not_null),
            bool(has_default),
            int(base),
            list(checks),
            str(base_type),
        )
        for oid, name, not_null, has_default, base, checks, base_type in conn.execute(
            "SELECT t.oid::int8, format_type(t.oid, NULL), t.typnotnull, "
            "t.typdefaultbin IS NOT NULL, t.typbasetype::int8, "
            "array(SELECT array[c.conname::text, pg_get_constraintdef(c.oid), "
            # Built-in functions are pinned (no pg_depend row): only the project's show.
            "      EXISTS (SELECT 1 FROM pg_depend d JOIN pg_proc p ON p.oid = d.refobjid "
            "        WHERE d.classid = 'pg_constraint'::regclass AND d.objid = c.oid "
            "        AND d.refclassid = 'pg_proc'::regclass AND p.provolatile <> 'i')::text, "
            "      pg_get_expr(c.conbin, 0)] "
            "      FROM pg_constraint c WHERE c.contypid = t.oid AND c.contype = 'c' "
            "      ORDER BY c.conname), "
            "format_type(t.typbasetype, t.typtypmod) "
            "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            f"WHERE t.typtype = 'd' AND n.nspname NOT IN {_SYSTEM}"
        ).fetchall()
    }
    out: dict[int, Domain] = {}
    for oid, (name, not_null, has_default, base, checks, base_type) in rows.items():
        found = [tuple(c) for c in checks]
        seen = {oid}
        while base in rows and base not in seen:  # a domain over a domain
            seen.add(base)
            _, base_not_null, base_default, base, base_checks, base_type = rows[base]
            not_null = not_null or base_not_null
            has_default = has_default or base_default
            found += [tuple(c) for c in base_checks]
        out[oid] = Domain(
            name,
            not_null,
            has_default,
            tuple((c[0], c[1]) for c in found),
            frozenset(c[0] for c in found if c[2] == "true"),
            base_type,
            {c[0]: c[3] for c in found},
        )
    return out


def _holders(conn: psycopg.Connection[Any], domains: dict[int, Domain]) -> dict[int, Holder]:
    """The arrays of the domains, and the composite types with a field of one."""
    if not domains:
        return {}
    out: dict[int, Holder] = {}
    for oid, element, fields in conn.execute(
        "SELECT t.oid::int8, t.typelem::int8, NULL FROM pg_type t "
        "WHERE t.typelem = ANY(%(d)s::oid[]) AND t.typlen = -1 AND t.typtype = 'b' "
        "UNION ALL "
        "SELECT t.oid::int8, 0, array_agg(array[a.attname::text, "
        "  format_type(a.atttypid, a.atttypmod), a.atttypid::text] ORDER BY a.attnum) "
        "FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid "
        "WHERE t.typtype = 'c' AND a.attnum > 0 AND NOT a.attisdropped "
        "AND EXISTS (SELECT 1 FROM pg_attribute d WHERE d.attrelid = t.typrelid "
        "  AND d.atttypid = ANY(%(d)s::oid[]) AND NOT d.attisdropped) "
        "GROUP BY t.oid",
        {"d": list(domains)},
    ).fetchall():
        if fields is None:
            out[int(oid)] = Holder(element=int(element))
        else:
            out[int(oid)] = Holder(fields=tuple((str(n), str(t), int(o)) for n, t, o in fields))
    return out


def _reads(rel: Relation, expression: str) -> tuple[str, ...] | None:
    """The table's columns an expression reads, in order, as pglast finds them; None when
    it does not parse or reads something else (a whole-row reference)."""
    tree = _expression(expression)
    if tree is None:
        return None
    names = {c.name for c in rel.columns}
    found: list[str] = []
    for node in walk_nodes(tree):
        if not isinstance(node, ast.ColumnRef):
            continue
        last = node.fields[-1] if node.fields else None
        if not isinstance(last, ast.String) or last.sval not in names:
            return None
        if last.sval not in found:
            found.append(last.sval)
    return tuple(found)


def _expression(expression: str) -> Any:
    try:
        stmt = pglast.parse_sql(f"SELECT {expression}")[0].stmt
    except pglast.parser.ParseError:
        return None
    targets = stmt.targetList if isinstance(stmt, ast.SelectStmt) else None
    return targets[0].val if targets and len(targets) == 1 else None


def _exclusion(
    con: Constraint,
    rel: Relation,
    elements: list[str],
    operators: list[str],
    predicate: str | None,
) -> Constraint:
    """An EXCLUDE (or a unique index's key) with its elements, each element's columns and
    its predicate's; left without elements (so judged by no probe) when one cannot be
    read."""
    reads = [_reads(rel, e) for e in elements]
    where = _reads(rel, predicate) if predicate is not None else ()
    if len(reads) != len(operators) or where is None or any(r is None for r in reads):
        return replace(con, columns=())
    element_columns = tuple(r for r in reads if r is not None)
    columns = tuple(dict.fromkeys(c for cols in element_columns for c in cols))
    return replace(
        con,
        columns=columns,
        elements=tuple(elements),
        element_columns=element_columns,
        plain=tuple(isinstance(_expression(e), ast.ColumnRef) for e in elements),
        operators=tuple(operators),
        predicate=predicate,
        predicate_columns=where,
    )


def _view_bases(conn: psycopg.Connection[Any], by_oid: dict[int, Relation]) -> None:
    """The base relation and columns of each auto-updatable view: its one FROM item (the
    relation its rewrite rule depends on) and its target list, read by pglast."""
    views = [oid for oid, rel in by_oid.items() if rel.kind == "v" and rel.updatable]
    if not views:
        return
    for oid, definition, bases in conn.execute(
        "SELECT v.oid::int8, pg_get_viewdef(v.oid), array(SELECT DISTINCT d.refobjid::int8 "
        "  FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass "
        "  AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass "
        "  WHERE r.ev_class = v.oid AND d.refobjid <> v.oid) "
        # Auto-updatable without triggers: an INSTEAD OF trigger's writes are its own.
        "FROM unnest(%s::oid[]) AS v(oid) WHERE pg_relation_is_updatable(v.oid, false) <> 0",
        (views,),
    ).fetchall():
        rel = by_oid[int(oid)]
        if len(bases) != 1 or int(bases[0]) not in by_oid:
            continue
        try:
            stmt = pglast.parse_sql(str(definition))[0].stmt
        except pglast.parser.ParseError:
            continue
        if not isinstance(stmt, ast.SelectStmt) or len(stmt.targetList or ()) != len(rel.columns):
            continue
        columns: list[str | None] = []
        for target in stmt.targetList or ():
            val = getattr(target, "val", None)
            last = val.fields[-1] if isinstance(val, ast.ColumnRef) and val.fields else None
            columns.append(last.sval if isinstance(last, ast.String) else None)
        rel.base_oid = int(bases[0])
        rel.base_columns = tuple(columns)


__all__ = ["Column", "Constraint", "Domain", "Holder", "Relation", "Snapshot", "take"]
