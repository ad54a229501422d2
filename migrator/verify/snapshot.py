"""What the static checks need to know of one phase's schema, read once from pg_catalog.

One snapshot per phase database: relations (with whether a view takes writes), their
columns (NOT NULL, default, identity, generated), unique indexes, constraint names and
BEFORE INSERT triggers. The checks then answer from memory, so a thousand queries cost
no more catalog round trips than one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

# pg_relation_is_updatable returns a bit per command: 1 << CMD_UPDATE (2), CMD_INSERT (3),
# CMD_DELETE (4); information_schema reads it the same way.
UPDATE_BIT, INSERT_BIT, DELETE_BIT = 1 << 2, 1 << 3, 1 << 4

_SYSTEM = "('pg_catalog', 'information_schema', 'migrator', 'pg_toast')"


@dataclass(frozen=True)
class Column:
    """A column of a relation at one phase."""

    name: str
    type: str
    not_null: bool
    has_default: bool
    identity: bool
    generated: bool

    @property
    def required(self) -> bool:
        """An INSERT that leaves this column out fails."""
        return self.not_null and not (self.has_default or self.identity or self.generated)


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
        rel = Relation(str(schema), str(name), str(kind), int(updatable))
        relations[(rel.schema, rel.name)] = rel
        by_oid[int(oid)] = rel
    for oid, name, type_, not_null, has_default, identity, generated in conn.execute(
        "SELECT a.attrelid::int8, a.attname, format_type(a.atttypid, a.atttypmod), "
        "a.attnotnull, a.atthasdef, a.attidentity <> '', a.attgenerated <> '' "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
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
                )
            )
    # Only plain-column, non-partial unique indexes can be an ON CONFLICT (cols) arbiter
    # that the static check understands; expression indexes are left to PREPARE.
    for oid, index, columns in conn.execute(
        "SELECT i.indrelid::int8, ic.relname, "
        "array(SELECT a.attname FROM unnest(i.indkey) k JOIN pg_attribute a "
        "      ON a.attrelid = i.indrelid AND a.attnum = k) "
        "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
        "WHERE i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL"
    ).fetchall():
        found = by_oid.get(int(oid))
        if found is not None:
            found.unique_indexes.append((str(index), frozenset(columns)))
    for oid, name in conn.execute("SELECT conrelid::int8, conname FROM pg_constraint").fetchall():
        found = by_oid.get(int(oid))
        if found is not None:
            found.constraints.add(str(name))
    # tgtype bits: 1 row, 2 before, 4 insert (see pg_trigger.h).
    for oid, name in conn.execute(
        "SELECT tgrelid::int8, tgname FROM pg_trigger "
        "WHERE NOT tgisinternal AND tgtype & 7 = 7 AND tgenabled <> 'D'"
    ).fetchall():
        found = by_oid.get(int(oid))
        if found is not None:
            found.before_insert_triggers.append(str(name))
    return Snapshot(phase, relations, search_path)


__all__ = ["Column", "Relation", "Snapshot", "take"]
