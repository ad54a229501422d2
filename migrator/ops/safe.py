"""The lock-safe statement forms the operations share (LINT-RULES.md gives the reasons).

Each helper returns steps; a step is one transaction (or one autocommit block), so the
strong lock one statement takes is released before the slow statement that follows:

- SET NOT NULL: CHECK (col IS NOT NULL) NOT VALID, VALIDATE in its own transaction,
  then SET NOT NULL (PostgreSQL 12+ skips its scan when a validated check proves it)
  and drop the check (rule 14).
- CHECK and FOREIGN KEY: added NOT VALID, validated in a later transaction (5, 6, 7).
- UNIQUE: a unique index built CONCURRENTLY in an autocommit block, then
  ADD CONSTRAINT ... USING INDEX, which only takes a brief lock (8).
- Indexes: CREATE/DROP INDEX CONCURRENTLY, in autocommit blocks (1, 2, 3), written so a
  rerun or a retry after a lock timeout drops the INVALID leftover of the failed attempt
  and builds again (4, 30).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migrator.engine.steps import Step, step
from migrator.ops.columns import FkOptions, OnDelete
from migrator.sqltext import ident, literal, short_name

if TYPE_CHECKING:
    from migrator.engine.catalog import Catalog, IndexInfo

_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def not_null_check_name(table: str, column: str) -> str:
    """The temporary CHECK that lets SET NOT NULL skip its scan."""
    return short_name(table, column, "not_null", prefix="_migrator_")


def not_null_steps(schema: str, table: str, column: str, key: str = "") -> list[Step]:
    """SET NOT NULL without holding ACCESS EXCLUSIVE through a scan.

    Three transactions: add the check NOT VALID (brief lock, no scan); validate it
    (SHARE UPDATE EXCLUSIVE: reads and writes go on); SET NOT NULL, which the validated
    check lets PostgreSQL 12+ do without a scan, and drop the check.
    """
    t = ident(schema, table)
    col = ident(column)
    check = ident(not_null_check_name(table, column))
    prefix = f"{key}-" if key else ""
    return [
        step(
            f"{prefix}not-null-check",
            f"CHECK ({column} IS NOT NULL) NOT VALID",
            f"ALTER TABLE {t} ADD CONSTRAINT {check} CHECK ({col} IS NOT NULL) NOT VALID",
        ),
        step(
            f"{prefix}validate-not-null",
            f"validate the NOT NULL check on {table}",
            f"ALTER TABLE {t} VALIDATE CONSTRAINT {check}",
        ),
        step(
            f"{prefix}set-not-null",
            f"SET NOT NULL on {table}.{column} (no scan: the check proves it)",
            f"ALTER TABLE {t} ALTER COLUMN {col} SET NOT NULL",
            f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {check}",
        ),
    ]


def add_check_step(key: str, schema: str, table: str, name: str, expression: str) -> Step:
    """ADD CONSTRAINT ... CHECK NOT VALID: enforced on new writes, no scan of the rows."""
    t = ident(schema, table)
    return step(
        key,
        f"CHECK {name} on {table}, NOT VALID",
        f"ALTER TABLE {t} ADD CONSTRAINT {ident(name)} CHECK ({expression}) NOT VALID",
    )


def lock_referenced_sql(
    catalog: Catalog, schema: str, table: str, mode: str = "SHARE ROW EXCLUSIVE"
) -> list[str]:
    """LOCK TABLE of the table a foreign key references, in the mode the statement after
    it takes there anyway (ADD: SHARE ROW EXCLUSIVE; DROP: ACCESS EXCLUSIVE); none
    where the role may not lock it so (`Catalog.may_lock`: a key needs REFERENCES
    there, a LOCK in these modes UPDATE, DELETE or TRUNCATE): the step then runs as
    PostgreSQL orders its locks, rather than fail on a table another role owns.

    PostgreSQL locks the referencing table first, then the referenced one; an
    application writes a parent row, then its child. A step waiting for the parent
    while it holds the child stalled such a transaction until the step's lock_timeout
    (and the step retried): taken parent first, under the same lock_timeout, the step
    waits for the application, never the other way round. Lint rule M040 knows this
    form (the mode is taken anyway).

    ONLY the table, unless it is partitioned: without ONLY, LOCK TABLE also locks a
    plain table's inheritance children, which the key's statement leaves alone (so
    their readers and writers waited for nothing); a partitioned table's partitions it
    does lock, in the same mode, so those are taken first too."""
    if not catalog.may_lock(schema, table):
        return []
    only = "" if catalog.relation_kind(schema, table) == "p" else "ONLY "
    return [f"LOCK TABLE {only}{ident(schema, table)} IN {mode} MODE"]


def lock_referenced_by_sql(catalog: Catalog, schema: str, table: str) -> list[str]:
    """LOCK TABLE (`lock_referenced_sql`, ACCESS EXCLUSIVE) of each table the foreign
    keys of ``table`` reference, for a DROP TABLE of it, which drops them too; none
    where the table is not there."""
    if not catalog.table_exists(schema, table):
        return []
    return [
        sql
        for target in catalog.referenced_tables(schema, table)
        for sql in lock_referenced_sql(catalog, *target, "ACCESS EXCLUSIVE")
    ]


def add_foreign_key_step(
    key: str,
    schema: str,
    table: str,
    name: str,
    columns: Sequence[str],
    ref_table: str,
    ref_columns: Sequence[str],
    on_delete: OnDelete | FkOptions | None = None,
    *,
    catalog: Catalog,
    not_valid: bool = True,
    description: str | None = None,
    ref_schema: str | None = None,
) -> Step:
    """ADD CONSTRAINT ... FOREIGN KEY NOT VALID: no scan while the locks are held, the
    referenced table locked first (`lock_referenced_sql`). ``on_delete`` is the action
    alone, or every option (`FkOptions`). Without ``not_valid`` only for a partitioned
    table whose partitions all hold the same key validated already (PostgreSQL attaches
    theirs instead of scanning, and drops their action triggers on the referenced table
    under ACCESS EXCLUSIVE, so that is the mode taken first there). ``ref_schema`` is
    the referenced table's schema where it is not ``schema`` (a partition in another
    schema than its table)."""
    ref_schema = schema if ref_schema is None else ref_schema
    sql = (
        f"ALTER TABLE {ident(schema, table)} ADD CONSTRAINT {ident(name)} "
        f"FOREIGN KEY ({', '.join(ident(c) for c in columns)}) "
        f"REFERENCES {ident(ref_schema, ref_table)} ({', '.join(ident(c) for c in ref_columns)})"
    )
    if isinstance(on_delete, FkOptions):
        sql += on_delete.fk_sql()
    elif on_delete is not None:
        sql += f" ON DELETE {on_delete.upper()}"
    if not not_valid:
        lock = lock_referenced_sql(catalog, ref_schema, ref_table, "ACCESS EXCLUSIVE")
        return step(key, description or f"foreign key {name} on {table}", *lock, sql)
    lock = lock_referenced_sql(catalog, ref_schema, ref_table)
    return step(
        key, description or f"foreign key {name} on {table}, NOT VALID", *lock, sql + " NOT VALID"
    )


def validate_step(key: str, schema: str, table: str, name: str) -> Step:
    """VALIDATE CONSTRAINT in its own transaction: scans under SHARE UPDATE EXCLUSIVE."""
    return step(
        key,
        f"validate {name} on {table}",
        f"ALTER TABLE {ident(schema, table)} VALIDATE CONSTRAINT {ident(name)}",
    )


def drop_constraint_step(key: str, schema: str, table: str, name: str) -> Step:
    """DROP CONSTRAINT IF EXISTS, rerunnable."""
    return step(
        key,
        f"drop constraint {name} on {table}",
        f"ALTER TABLE IF EXISTS {ident(schema, table)} DROP CONSTRAINT IF EXISTS {ident(name)}",
    )


def drop_foreign_key_step(
    key: str,
    schema: str,
    table: str,
    name: str,
    references: tuple[str, str] | None,
    *,
    catalog: Catalog,
) -> Step:
    """DROP CONSTRAINT IF EXISTS of a foreign key, rerunnable: ACCESS EXCLUSIVE on both
    tables, the one it ``references`` (schema, table) taken first
    (`lock_referenced_sql`); None where the key is not there (nothing to take first, and
    the table may not be there either)."""
    lock = lock_referenced_sql(catalog, *references, "ACCESS EXCLUSIVE") if references else []
    return step(
        key,
        f"drop foreign key {name} on {table}",
        *lock,
        f"ALTER TABLE IF EXISTS {ident(schema, table)} DROP CONSTRAINT IF EXISTS {ident(name)}",
    )


def index_key(column_or_expression: str, columns: Sequence[str]) -> str:
    """One key of an index: a column name quoted, anything else as a parenthesised expression."""
    if column_or_expression in columns or _PLAIN_NAME.match(column_or_expression):
        return ident(column_or_expression)
    return f"({column_or_expression})"


StorageValue = str | int | float | bool


@dataclass(frozen=True)
class IndexShape:
    """What CREATE INDEX says of an index besides its name and table, rendered here only.

    ``keys`` are already SQL (see `index_key`); ``storage`` is the WITH (...) list as
    (parameter, value) pairs. A new index option is a field here and a clause in
    `create_sql`; the operations pass the shape through whole.
    """

    keys: tuple[str, ...]
    unique: bool = False
    method: str = "btree"
    where: str | None = None
    include: tuple[str, ...] = ()
    nulls_not_distinct: bool = False
    storage: tuple[tuple[str, StorageValue], ...] = ()

    def create_sql(
        self,
        schema: str,
        table: str,
        name: str,
        *,
        concurrently: bool = True,
        if_not_exists: bool = False,
        only: bool = False,
    ) -> str:
        """CREATE [UNIQUE] INDEX [CONCURRENTLY]. With ``only``: CREATE INDEX ... ON ONLY a
        partitioned table, which builds nothing (and cannot be CONCURRENTLY)."""
        sql = (
            f"CREATE {'UNIQUE ' if self.unique else ''}INDEX "
            f"{'CONCURRENTLY ' if concurrently and not only else ''}"
            f"{'IF NOT EXISTS ' if if_not_exists else ''}{ident(name)} "
            f"ON {'ONLY ' if only else ''}{ident(schema, table)} USING {self.method} "
            f"({', '.join(self.keys)})"
        )
        if self.include:
            sql += f" INCLUDE ({', '.join(ident(c) for c in self.include)})"
        if self.nulls_not_distinct:
            sql += " NULLS NOT DISTINCT"
        if self.storage:
            sql += f" WITH ({_storage_sql(self.storage)})"
        if self.where:
            sql += f" WHERE ({self.where})"
        return sql


def _storage_sql(parameters: Sequence[tuple[str, StorageValue]]) -> str:
    """``fillfactor = 70, deduplicate_items = off``: names quoted, values as literals."""

    def value(v: StorageValue) -> str:
        if isinstance(v, bool):
            return "on" if v else "off"
        return str(v) if isinstance(v, int | float) else literal(v)

    return ", ".join(f"{ident(k)} = {value(v)}" for k, v in parameters)


def drop_index_sql(schema: str, name: str) -> str:
    """DROP INDEX CONCURRENTLY IF EXISTS: no ACCESS EXCLUSIVE, rerunnable."""
    return f"DROP INDEX CONCURRENTLY IF EXISTS {ident(schema, name)}"


def drop_index_step(key: str, description: str, schema: str, name: str) -> Step:
    """A step dropping an index concurrently, in its own autocommit block."""
    return step(key, description, drop_index_sql(schema, name), autocommit=True)


def index_mark(release: str) -> str:
    """The comment an index carries while its build is not yet recorded as done.

    A rerun finding a valid index of the plan's name adopts it only with this mark: an
    index that was there before the release is a name clash, never taken over (its
    rollback would drop it).
    """
    return f"migrator: built by release {release}"


def is_ours(found: IndexInfo | None, table: str, release: str) -> bool:
    """True for a valid index on ``table`` that this release built (see `index_mark`)."""
    return (
        found is not None
        and found.valid
        and found.table == table
        and found.comment == index_mark(release)
    )


def unmark_index_sql(schema: str, name: str) -> str:
    """Clear the mark once the build is recorded: the final schema carries no trace."""
    return f"COMMENT ON INDEX {ident(schema, name)} IS NULL"


def build_index_step(
    key: str,
    description: str,
    schema: str,
    table: str,
    name: str,
    shape: IndexShape,
    *,
    release: str | None,
    reuse: bool,
) -> Step:
    """The autocommit block that builds an index concurrently.

    With ``reuse`` (a valid index of that name and shape is already there: an earlier
    attempt finished but was not recorded) the build is skipped by IF NOT EXISTS.
    Otherwise the block first drops what a failed attempt left behind (an INVALID index
    of that name; validation made sure the name is the plan's own), so a rerun, or the
    executor's retry after a lock timeout, builds afresh instead of skipping over it.
    The block ends by marking the index as this release's (`index_mark`); the caller's
    next, transactional step clears the mark.
    """
    create = shape.create_sql(schema, table, name, if_not_exists=reuse)
    marks = (
        [f"COMMENT ON INDEX {ident(schema, name)} IS {literal(index_mark(release))}"]
        if release is not None
        else []
    )
    if reuse:
        return step(key, description, create, *marks, autocommit=True)
    return step(key, description, drop_index_sql(schema, name), create, *marks, autocommit=True)


def unique_steps(
    key: str,
    schema: str,
    table: str,
    name: str,
    columns: Sequence[str],
    *,
    release: str | None = None,
    reuse_index: bool = False,
) -> list[Step]:
    """UNIQUE without ACCESS EXCLUSIVE through the build: index first, then the constraint.

    With ``release`` the index is marked as the release's while it has no constraint
    (see `index_mark`), so a rerun may adopt it; the constraint step clears the mark.
    """
    return [
        build_index_step(
            f"{key}-index",
            f"unique index {name} on {table}, built concurrently",
            schema,
            table,
            name,
            IndexShape(tuple(ident(c) for c in columns), unique=True),
            release=release,
            reuse=reuse_index,
        ),
        step(
            f"{key}-constraint",
            f"UNIQUE {name} on {table} USING INDEX (no scan)",
            f"ALTER TABLE {ident(schema, table)} ADD CONSTRAINT {ident(name)} "
            f"UNIQUE USING INDEX {ident(name)}",
            *([unmark_index_sql(schema, name)] if release is not None else []),
        ),
    ]


def drop_unique_steps(key: str, schema: str, table: str, name: str) -> list[Step]:
    """Undo `unique_steps`: the constraint (which takes its index), then a lone index."""
    return [
        drop_constraint_step(f"{key}-constraint", schema, table, name),
        drop_index_step(f"{key}-index", f"drop index {name} if it is still there", schema, name),
    ]
