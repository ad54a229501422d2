"""The `attach_partition` operation: a table becomes a partition of a partitioned table.

ATTACH PARTITION scans the table for rows outside the bound while it holds ACCESS
EXCLUSIVE on it, unless a validated CHECK already proves the bound. So: the partition
constraint the bound means (PostgreSQL's own, pg_get_partition_constraintdef of a
scratch partition) is added as a CHECK NOT VALID (brief lock, no scan), validated in
its own transaction (SHARE UPDATE EXCLUSIVE: reads and writes go on), then the attach
skips its scan (SHARE UPDATE EXCLUSIVE on the parent), and the CHECK is dropped. A bound
that overlaps a partition, or rows outside it, are refused before anything runs. The
rollback detaches it again (CONCURRENTLY where the version has it).

ATTACH refuses a column the parent has NOT NULL and the table not (15 and 18 alike).
Such a column holding NULLs is refused before anything runs (named, with its NULL
count); else it is made NOT NULL first without a scan under the strong lock: CHECK (col
IS NOT NULL) NOT VALID, VALIDATE, then SET NOT NULL (which trusts the validated CHECK)
and the CHECK dropped. The columns are saved first (a function in the migrator schema)
so the rollback makes exactly those nullable again after the detach.

ATTACH also builds, under its lock, each index of the parent the table lacks. So before
it, each one missing is built CONCURRENTLY on the table from the parent's own
definition (pg_get_indexdef, re-aimed by pglast), one step each; one that backs a
UNIQUE or PRIMARY KEY constraint is then made the table's constraint USING INDEX, as
PostgreSQL adopts only such an index for it. The attach then adopts them all and builds
nothing. They carry migrator's build mark until the contract, so the rollback drops
them (and only them) after the detach. A table that is itself partitioned gets each
index ON ONLY itself and CONCURRENTLY per leaf, attached (a unique or primary key: per
leaf USING INDEX, then on the table, adopting theirs), as ops/partitioned.py does. An
exclusion constraint of the parent (PostgreSQL 17+) is added to the table first by
add_exclusion's own steps, with the parent's definition, so the attach adopts it; on a
table that is itself partitioned, to each leaf that way, then to each level above,
deepest first, adopting theirs (PostgreSQL takes one there only where the constraint
compares the partition key with =; otherwise the attach is refused before anything runs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

import pglast
from pglast import ast
from pglast.stream import RawStream
from pydantic import Field

from migrator.durations import Duration
from migrator.engine.catalog_partitions import (
    Partition,
    TableIndex,
    is_partitioned,
    partition_constraint,
    partition_of,
    partitions,
    rows_outside,
    table_indexes,
    try_bound,
)
from migrator.engine.steps import Statement, Step, step
from migrator.errors import ValidationFailed
from migrator.ops.add_exclusion import AddExclusion, helper_index_name
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.partitioned import (
    bottom_up,
    drop_partitioned_index_step,
    partition_index_name,
    partition_key_missing,
    partition_step_key,
)
from migrator.ops.records import SavedRecord
from migrator.ops.safe import (
    drop_constraint_step,
    drop_index_step,
    index_mark,
    unmark_index_sql,
    validate_step,
)
from migrator.ops.validation import require_table
from migrator.sqltext import ident, literal, short_name
from migrator.words import count

# DETACH PARTITION ... CONCURRENTLY is PostgreSQL 14+.
DETACH_CONCURRENTLY = 140000
# NOT NULL as a constraint of pg_constraint, a partition's own or inherited: 18+.
NOT_NULL_CONSTRAINTS = 180000


def bound_check_name(partition: str) -> str:
    """The temporary CHECK that proves a partition's rows fit its bound."""
    return short_name(partition, "bound", prefix="_migrator_")


def not_null_check_name(partition: str, column: str) -> str:
    """The temporary CHECK (column IS NOT NULL) that lets SET NOT NULL skip its scan."""
    return short_name(partition, column, "nn", prefix="_migrator_")


def saved_not_null(schema: str, partition: str) -> SavedRecord:
    """The record of the columns the attach made NOT NULL, for the rollback."""
    return SavedRecord(short_name(schema, partition, "not_null"))


def nullable_columns(ctx: Context, table: str, partition: str) -> list[str]:
    """Columns NOT NULL in the partitioned table that ``partition`` leaves nullable
    (ATTACH PARTITION refuses those, on 15 and 18 alike)."""
    required = {c.name for c in ctx.catalog.columns(ctx.schema, table) if c.not_null}
    return [
        c.name
        for c in ctx.catalog.columns(ctx.schema, partition)
        if c.name in required and not c.not_null
    ]


def not_null_steps(ctx: Context, key: str, table: str, partition: str) -> list[Step]:
    """Each column the parent has NOT NULL and ``partition`` not: first the list saved
    (the rollback drops exactly those NOT NULLs again after the detach), then per column
    CHECK (col IS NOT NULL) NOT VALID, VALIDATE (SHARE UPDATE EXCLUSIVE: reads and writes
    go on), and SET NOT NULL, which finds the validated CHECK and skips its scan, with
    the CHECK dropped in the same transaction."""
    columns = nullable_columns(ctx, table, partition)
    if not columns:
        return []
    record = saved_not_null(ctx.schema, partition)
    steps = []
    if not record.exists(ctx):
        # With each partition's own nullable ones (a sub-partitioned table): SET NOT NULL
        # reaches them; a partition's NOT NULL of its own is not the attach's to undo.
        made = [[ctx.schema, partition, c] for c in columns] + [
            [p.schema, p.name, c.name]
            for p in partitions(ctx.catalog, ctx.schema, partition)
            for c in ctx.catalog.columns(p.schema, p.name)
            if c.name in columns and not c.not_null
        ]
        steps.append(
            step(
                f"{key}-save-not-null",
                f"remember the columns of {partition} made NOT NULL, for the rollback",
                *record.save_sql(json.dumps(made)),
            )
        )
    part = ident(ctx.schema, partition)
    for column in columns:
        check = not_null_check_name(partition, column)
        steps += [
            step(
                f"{key}-not-null-{column}",
                f"CHECK ({column} IS NOT NULL) on {partition}, NOT VALID",
                f"ALTER TABLE {part} DROP CONSTRAINT IF EXISTS {ident(check)}",
                f"ALTER TABLE {part} ADD CONSTRAINT {ident(check)} "
                f"CHECK ({ident(column)} IS NOT NULL) NOT VALID",
            ),
            validate_step(f"{key}-not-null-{column}-validate", ctx.schema, partition, check),
            step(
                f"{key}-not-null-{column}-set",
                f"{partition}.{column} SET NOT NULL (no scan: the CHECK proves it)",
                f"ALTER TABLE {part} ALTER COLUMN {ident(column)} SET NOT NULL",
                f"ALTER TABLE {part} DROP CONSTRAINT {ident(check)}",
            ),
        ]
    return steps


def _made_not_null(ctx: Context, partition: str) -> list[tuple[str, str, str]] | None:
    """(schema, table, column) the attach made NOT NULL, as saved; an older record's
    (table, column) pairs are in the plan's schema."""
    saved = saved_not_null(ctx.schema, partition).read(ctx)
    if saved is None:
        return None
    return [
        (str(e[0]), str(e[1]), str(e[2])) if len(e) == 3 else (ctx.schema, str(e[0]), str(e[1]))
        for e in json.loads(saved)
    ]


def undo_not_null_steps(ctx: Context, key: str, partition: str) -> list[Step]:
    """After the detach: DROP NOT NULL on the columns the attach made NOT NULL (catalog
    only; the table's first, then its partitions' own), any helper CHECK a stopped run
    left, and the saved list.

    From PostgreSQL 18 a NOT NULL is a constraint that knows whether it is a
    partition's own: the table's DROP NOT NULL takes only those it gave. Before 18 it
    reaches every partition (and fails on one whose primary key needs the column), so
    the partitions that had it of their own are detached for it (the topmost of each
    such subtree) in the same transaction and attached again after, without a scan of
    theirs: a CHECK matching each one's bound is added NOT VALID and validated first.
    Where their parent has a DEFAULT partition, PostgreSQL still scans that one under
    the lock on the attach again (that no row of it belongs in the bound); not avoided.
    """
    made = _made_not_null(ctx, partition)
    if made is None:
        return []
    root = (ctx.schema, partition)
    kept: dict[str, list[Partition]] = {}
    tree: list[Partition] = []
    if ctx.server_version < NOT_NULL_CONSTRAINTS:
        tree = partitions(ctx.catalog, ctx.schema, partition)
        for column in dict.fromkeys(c for s, t, c in made if (s, t) == root):
            was_made = {(s, t) for s, t, c in made if c == column}
            kept[column] = [
                p
                for p in tree
                if (p.schema, p.name) not in was_made
                and (p.parent_schema, p.parent) in was_made
                and not p.detach_pending
            ]
    guarded = list({(p.schema, p.name): p for ps in kept.values() for p in ps}.values())
    steps: list[Step] = []
    for p in guarded:
        constraint = partition_constraint(ctx.catalog, p.schema, p.name)
        if constraint is None:
            continue
        check = bound_check_name(p.name)
        keep = partition_step_key(f"{key}-keep", ctx.schema, p, tree)
        steps += [
            step(
                f"{keep}-check",
                f"CHECK matching the bound on {p.name}, NOT VALID, to attach it again",
                f"ALTER TABLE {ident(p.schema, p.name)} DROP CONSTRAINT IF EXISTS {ident(check)}",
                f"ALTER TABLE {ident(p.schema, p.name)} ADD CONSTRAINT {ident(check)} "
                f"CHECK ({constraint}) NOT VALID",
            ),
            validate_step(f"{keep}-validate", p.schema, p.name, check),
        ]
    for schema, table, column in made:
        own = (schema, table) == root
        detached = kept.get(column, []) if own else []
        steps.append(
            step(
                f"{key}-not-null-{column}" + ("" if own else _made_key(ctx, made, schema, table)),
                f"{table}.{column} nullable again"
                + (
                    f" ({', '.join(p.name for p in detached)} detached for it and attached "
                    "again: their NOT NULL is their own)"
                    if detached
                    else ""
                ),
                *(
                    [
                        f"ALTER TABLE {ident(schema, table)} DROP CONSTRAINT IF EXISTS "
                        f"{ident(not_null_check_name(partition, column))}"
                    ]
                    if own
                    else []
                ),
                *(
                    f"ALTER TABLE {ident(p.parent_schema, p.parent)} DETACH PARTITION "
                    f"{ident(p.schema, p.name)}"
                    for p in detached
                ),
                f"ALTER TABLE {ident(schema, table)} ALTER COLUMN {ident(column)} DROP NOT NULL",
                *(
                    f"ALTER TABLE {ident(p.parent_schema, p.parent)} ATTACH PARTITION "
                    f"{ident(p.schema, p.name)} {p.bound}"
                    for p in detached
                ),
            )
        )
    steps += [
        step(
            f"{partition_step_key(f'{key}-keep', ctx.schema, p, tree)}-drop-check",
            f"drop the bound's CHECK on {p.name}",
            f"ALTER TABLE {ident(p.schema, p.name)} DROP CONSTRAINT IF EXISTS "
            f"{ident(bound_check_name(p.name))}",
        )
        for p in guarded
    ]
    return [*steps, forget_not_null_step(ctx, f"{key}-forget-not-null", partition)]


def forget_not_null_step(ctx: Context, key: str, partition: str) -> Step:
    return step(
        key,
        f"forget the columns of {partition} made NOT NULL",
        saved_not_null(ctx.schema, partition).forget_sql(),
    )


def _index_sql(
    definition: str, schema: str, table: str, name: str, if_not_exists: bool, only: bool = False
) -> str:
    """An index's definition (pg_get_indexdef) as CREATE INDEX CONCURRENTLY on another
    table under another name (with ``only``: CREATE INDEX ON ONLY a partitioned table,
    catalog only); with ``table`` empty, the definition with no name or table (what two
    indexes must share to match)."""
    stmt = pglast.parse_sql(definition)[0].stmt
    assert isinstance(stmt, ast.IndexStmt)
    stmt.idxname = name or None
    stmt.relation = ast.RangeVar(
        schemaname=schema or None, relname=table or "t", inh=not only, relpersistence="p"
    )
    stmt.concurrent = bool(table) and not only
    stmt.if_not_exists = if_not_exists
    return str(RawStream()(stmt))


def _index_columns(definition: str) -> list[str]:
    """The key columns of a UNIQUE or PRIMARY KEY constraint's index (plain columns)."""
    stmt = pglast.parse_sql(definition)[0].stmt
    assert isinstance(stmt, ast.IndexStmt)
    return [str(e.name) for e in stmt.indexParams or () if isinstance(e, ast.IndexElem)]


def _shape(index: TableIndex) -> str:
    return _index_sql(index.definition, "", "", "", False)


def missing_indexes(ctx: Context, table: str, partition: str) -> list[tuple[TableIndex, str]]:
    """The parent's indexes ``partition`` has no match for (as ATTACH PARTITION looks for
    one: same definition, valid, not attached, and backing a constraint of the same kind
    where the parent's does), each with the name its copy takes."""
    own = [
        i for i in table_indexes(ctx.catalog, ctx.schema, partition) if i.valid and not i.attached
    ]
    used: set[str] = set()
    missing = []
    for parent in table_indexes(ctx.catalog, ctx.schema, table):
        shape = _shape(parent)
        match = next(
            (
                i
                for i in own
                if i.name not in used
                and (parent.constraint is None or i.constraint == parent.constraint)
                and _shape(i) == shape
            ),
            None,
        )
        if match is not None:
            used.add(match.name)
        else:
            missing.append((parent, partition_index_name(partition, parent.name)))
    return missing


def _build_sql(ctx: Context, schema: str, table: str, name: str, definition: str) -> list[str]:
    """CREATE INDEX CONCURRENTLY ``name`` on ``table`` from ``definition``, marked: an
    INVALID leftover of a failed build is dropped first; a valid one this release built
    is kept (IF NOT EXISTS)."""
    found = ctx.catalog.index(schema, name)
    reuse = found is not None and found.valid and found.comment == index_mark(ctx.release)
    return [
        *([] if reuse else [f"DROP INDEX CONCURRENTLY IF EXISTS {ident(schema, name)}"]),
        _index_sql(definition, schema, table, name, reuse),
        f"COMMENT ON INDEX {ident(schema, name)} IS {literal(index_mark(ctx.release))}",
    ]


def _made_key(ctx: Context, made: list[tuple[str, str, str]], schema: str, table: str) -> str:
    """The key suffix of a partition's DROP NOT NULL step: ``-table``, or
    ``-schema.table`` for one in another schema whose name another made NOT NULL has
    too (as `partition_step_key`: every other keeps the key it always had)."""
    shared = any(t == table and s != schema for s, t, _ in made)
    return f"-{table}" if schema == ctx.schema or not shared else f"-{schema}.{table}"


def _level_key(
    key: str, schema: str, partition: str, level: Partition | None, parts: Sequence[Partition]
) -> str:
    """The step key of the constraint on one level of ``partition`` (``schema``): the
    partition's own (``level`` None) ``KEY-constraint``, a sub-partitioned one's
    ``KEY-level-constraint`` (with its schema as `partition_step_key` puts it)."""
    if level is None:
        return f"{key}-constraint"
    return f"{partition_step_key(key, schema, level, parts)}-constraint"


def _partitioned_index_steps(
    ctx: Context, key: str, partition: str, parent: TableIndex, name: str
) -> list[Step]:
    """The parent's index ``parent`` on a partitioned ``partition`` (a sub-partitioned
    table to attach), built the way create_index builds one on a partitioned table
    (ops/partitioned.py): a plain index ON ONLY the table (catalog only), then per leaf
    CONCURRENTLY and ATTACH PARTITION, each its own step. One backing a UNIQUE or
    PRIMARY KEY constraint: per leaf CONCURRENTLY and made the leaf's constraint USING
    INDEX, then the constraint on each sub-partitioned level, deepest first, and on the
    table, each adopting what is below it (no build, no scan)."""
    mark = literal(index_mark(ctx.release))
    what = f"{partition}'s {name} ({parent.name} of the parent)"
    steps: list[Step] = []
    if parent.constraint not in ("u", "p"):
        steps.append(
            step(
                f"{key}-index-{parent.name}",
                f"index {name} on ONLY {partition} (empty until its partitions' are attached)",
                _index_sql(parent.definition, ctx.schema, partition, name, True, only=True),
                f"COMMENT ON INDEX {ident(ctx.schema, name)} IS {mark}",
            )
        )
        # By (schema, name): two partitions of one name in two schemas are two owners, and
        # each index lives in its own table's schema.
        owner = {(ctx.schema, partition): name}
        tree = partitions(ctx.catalog, ctx.schema, partition)
        for part in tree:
            child = partition_index_name(part.name, parent.name)
            owner[(part.schema, part.name)] = child
            above = owner[(part.parent_schema, part.parent)]
            attach = (
                f"ALTER INDEX {ident(part.parent_schema, above)} "
                f"ATTACH PARTITION {ident(part.schema, child)}"
            )
            part_key = partition_step_key(f"{key}-index-{parent.name}", ctx.schema, part, tree)
            if part.partitioned:
                steps.append(
                    step(
                        part_key,
                        f"index {child} on ONLY {part.name}, attached to {above}",
                        _index_sql(parent.definition, part.schema, part.name, child, True, True),
                        f"COMMENT ON INDEX {ident(part.schema, child)} IS {mark}",
                        attach,
                    )
                )
                continue
            # ALTER INDEX ... ATTACH PARTITION of an attached index does nothing: rerunnable.
            steps.append(
                step(
                    part_key,
                    f"index {child} on {part.name}, as {what}, built concurrently and attached",
                    *_build_sql(ctx, part.schema, part.name, child, parent.definition),
                    attach,
                    autocommit=True,
                )
            )
        return steps
    kind = "PRIMARY KEY" if parent.constraint == "p" else "UNIQUE"
    cols = ", ".join(ident(c) for c in _index_columns(parent.definition))
    levels = bottom_up(ctx, partition)
    for part in levels:
        if part.partitioned:
            continue
        child = partition_index_name(part.name, parent.name)
        leaf_key = partition_step_key(f"{key}-index-{parent.name}", ctx.schema, part, levels)
        steps += [
            step(
                leaf_key,
                f"index {child} on {part.name}, as {what}, built concurrently",
                *_build_sql(ctx, part.schema, part.name, child, parent.definition),
                autocommit=True,
            ),
            step(
                f"{leaf_key}-constraint",
                f"{kind} {child} on {part.name} USING INDEX (no scan)",
                f"ALTER TABLE {ident(part.schema, part.name)} ADD CONSTRAINT {ident(child)} "
                f"{kind} USING INDEX {ident(child)}",
            ),
        ]
    attaches = "attaches its partitions' (no build, no scan)"
    for schema, level, own, sub in [
        *(
            (p.schema, p.name, partition_index_name(p.name, parent.name), p)
            for p in levels
            if p.partitioned
        ),
        (ctx.schema, partition, name, None),
    ]:
        steps.append(
            step(
                _level_key(f"{key}-index-{parent.name}", ctx.schema, partition, sub, levels),
                f"{kind} {own} on {level}: {attaches}",
                f"ALTER TABLE {ident(schema, level)} ADD CONSTRAINT {ident(own)} {kind} ({cols})",
                f"COMMENT ON INDEX {ident(schema, own)} IS {mark}",
            )
        )
    return steps


def exclusion_copy(
    ctx: Context, table: str, partition: str, parent: TableIndex, name: str, max_lock_hold: float
) -> AddExclusion | str:
    """The parent's exclusion constraint ``parent`` as an add_exclusion of the same
    elements, operators, method and WHERE on the table to attach, named ``name`` (PostgreSQL
    17+ adopts only a constraint of the very same definition); or why it cannot be one."""
    from migrator.engine.catalog_partitions import index_constraint_definition
    from migrator.ops.create_table import ExclusionElement

    definition = index_constraint_definition(ctx.catalog, ctx.schema, table, parent.name)
    if definition is None:
        return f"{table} has no constraint on index {parent.name}"
    stmt = pglast.parse_sql(f"ALTER TABLE t ADD CONSTRAINT c {definition}")[0].stmt
    assert isinstance(stmt, ast.AlterTableStmt) and stmt.cmds
    cmd = stmt.cmds[0]
    assert isinstance(cmd, ast.AlterTableCmd) and isinstance(cmd.def_, ast.Constraint)
    con = cmd.def_
    elements = []
    for element, operator in con.exclusions or ():
        names = [str(o.sval) for o in operator]
        if element.opclass or element.ordering or element.nulls_ordering or element.collation:
            return f"{definition} has an operator class, collation or ordering"
        if len(names) > 1 and names[0] != "pg_catalog":
            return f"{definition} names an operator of schema {names[0]}"
        column = element.name or str(RawStream()(element.expr))
        elements.append(ExclusionElement.model_validate({"column": column, "with": names[-1]}))
    return AddExclusion(
        table=partition,
        name=name,
        using=str(con.access_method or "gist"),
        elements=elements,
        where=None if con.where_clause is None else str(RawStream()(con.where_clause)),
        max_lock_hold=max_lock_hold,
    )


def exclusion_steps(ctx: Context, key: str, parent: TableIndex, copy: AddExclusion) -> list[Step]:
    """add_exclusion's own steps for ``copy`` (helper index CONCURRENTLY and timed, the
    guard, ADD CONSTRAINT under lock_timeout, the helper dropped), under this
    operation's keys; the constraint's index carries the build mark from the transaction
    that adds it, so the rollback drops it (and only it)."""
    mark = f"COMMENT ON INDEX {ident(ctx.schema, copy.name)} IS {literal(index_mark(ctx.release))}"
    steps = []
    for s in copy.expand(ctx):
        statements = s.statements
        if s.key == "exclusion-constraint":
            statements = (*statements, Statement(mark, False))
        steps.append(replace(s, key=f"{key}-index-{parent.name}-{s.key}", statements=statements))
    return steps


def _partitioned_exclusion_steps(
    ctx: Context, key: str, partition: str, parent: TableIndex, copy: AddExclusion
) -> list[Step]:
    """The parent's exclusion constraint on a partitioned ``partition`` (PostgreSQL 17+):
    on each leaf by add_exclusion's own steps (helper index concurrently and timed, the
    guard, ADD CONSTRAINT under lock_timeout: the leaf's index built under its lock,
    bounded by max_lock_hold), then the same constraint on each sub-partitioned level,
    deepest first, and on the table, each adopting its partitions' (no build, no scan),
    marked for the rollback."""
    mark = literal(index_mark(ctx.release))
    levels = bottom_up(ctx, partition)
    steps: list[Step] = []
    for part in levels:
        if not part.partitioned:
            leaf = copy.model_copy(
                update={"table": part.name, "name": partition_index_name(part.name, parent.name)}
            )
            leaf_ctx = replace(ctx, schema=part.schema)
            steps += exclusion_steps(
                leaf_ctx, partition_step_key(key, ctx.schema, part, levels), parent, leaf
            )
    for schema, level, own, sub in [
        *(
            (p.schema, p.name, partition_index_name(p.name, parent.name), p)
            for p in levels
            if p.partitioned
        ),
        (ctx.schema, partition, copy.name, None),
    ]:
        steps.append(
            step(
                _level_key(f"{key}-index-{parent.name}", ctx.schema, partition, sub, levels),
                f"EXCLUDE {own} on {level}: attaches its partitions' (no build, no scan)",
                copy.model_copy(update={"table": level, "name": own}).constraint_sql(
                    replace(ctx, schema=schema)
                ),
                f"COMMENT ON INDEX {ident(schema, own)} IS {mark}",
            )
        )
    return steps


def index_steps(
    ctx: Context, key: str, table: str, partition: str, max_lock_hold: float = 1.0
) -> list[Step]:
    """Each index of the parent that ``partition`` lacks, built concurrently (see the
    module): an INVALID leftover of a failed build is dropped first; a valid one this
    release built is kept (IF NOT EXISTS)."""
    steps = []
    part = ident(ctx.schema, partition)
    partitioned = is_partitioned(ctx.catalog, ctx.schema, partition)
    for parent, name in missing_indexes(ctx, table, partition):
        if parent.constraint == "x":
            copy = exclusion_copy(ctx, table, partition, parent, name, max_lock_hold)
            assert isinstance(copy, AddExclusion)  # validate_live refused the others
            steps += (
                _partitioned_exclusion_steps(ctx, key, partition, parent, copy)
                if partitioned
                else exclusion_steps(ctx, key, parent, copy)
            )
            continue
        if partitioned:
            steps += _partitioned_index_steps(ctx, key, partition, parent, name)
            continue
        steps.append(
            step(
                f"{key}-index-{parent.name}",
                f"index {name} on {partition}, as {table}'s {parent.name}, built concurrently",
                *_build_sql(ctx, ctx.schema, partition, name, parent.definition),
                autocommit=True,
            )
        )
        if parent.constraint in ("u", "p"):
            kind = "PRIMARY KEY" if parent.constraint == "p" else "UNIQUE"
            steps.append(
                step(
                    f"{key}-index-{parent.name}-constraint",
                    f"{kind} {name} on {partition} USING INDEX (no scan)",
                    f"ALTER TABLE {part} ADD CONSTRAINT {ident(name)} {kind} USING INDEX "
                    f"{ident(name)}",
                )
            )
    return steps


def built_tree_indexes(ctx: Context, partition: str) -> list[tuple[str, str, TableIndex, bool]]:
    """The indexes this release built on ``partition`` and, where it is partitioned, on
    its partitions, parents first: (schema, table, index, whether the table is
    partitioned)."""
    tables = [(ctx.schema, partition, is_partitioned(ctx.catalog, ctx.schema, partition))]
    if tables[0][2]:
        tables += [
            (p.schema, p.name, p.partitioned)
            for p in partitions(ctx.catalog, ctx.schema, partition)
        ]
    return [
        (schema, table, index, partitioned)
        for schema, table, partitioned in tables
        for index in table_indexes(ctx.catalog, schema, table)
        if index.comment == index_mark(ctx.release)
    ]


def attach_steps(ctx: Context, key: str, table: str, partition: str, bound: str) -> list[Step]:
    """CHECK NOT VALID, VALIDATE, ATTACH (no scan), drop the CHECK: four transactions."""
    trial = try_bound(ctx.catalog, ctx.schema, table, bound, skip=partition, name=partition)
    if trial.error is not None or trial.constraint is None:
        raise ValidationFailed(
            f"attach_partition {partition}: PostgreSQL refuses the bound {bound}: {trial.error}"
        )
    part = ident(ctx.schema, partition)
    check = ident(bound_check_name(partition))
    return [
        step(
            f"{key}-check",
            f"CHECK matching the bound on {partition}, NOT VALID",
            f"ALTER TABLE {part} ADD CONSTRAINT {check} CHECK ({trial.constraint}) NOT VALID",
        ),
        validate_step(f"{key}-validate", ctx.schema, partition, bound_check_name(partition)),
        step(
            key,
            f"attach {partition} to {table} {bound} (no scan: the CHECK proves it)",
            f"ALTER TABLE {ident(ctx.schema, table)} ATTACH PARTITION {part} {bound}",
        ),
        step(
            f"{key}-drop-check",
            f"drop the bound's CHECK on {partition}",
            f"ALTER TABLE {part} DROP CONSTRAINT IF EXISTS {check}",
        ),
    ]


def detach_steps(ctx: Context, key: str, table: str, partition: str) -> list[Step]:
    """DETACH, CONCURRENTLY where it can be (PostgreSQL 14+, no default partition).

    A CHECK proving the partition constraint is added NOT VALID and validated first: a
    concurrent detach would otherwise add one of its own (with a name of its choosing)
    to the detached table; it is dropped after. A detach a crash left pending is
    finished (FINALIZE).
    """
    parent = ident(ctx.schema, table)
    part = ident(ctx.schema, partition)
    check = ident(bound_check_name(partition))
    drop_check = step(
        f"{key}-drop-check",
        f"drop the bound's CHECK on {partition}",
        f"ALTER TABLE IF EXISTS {part} DROP CONSTRAINT IF EXISTS {check}",
    )
    found = partition_of(ctx.catalog, ctx.schema, partition)
    if found is None or found.parent != table:
        return [drop_check]  # detached already
    if found.detach_pending:
        return [
            step(
                key,
                f"finish detaching {partition}",
                f"ALTER TABLE {parent} DETACH PARTITION {part} FINALIZE",
                autocommit=True,
            ),
            drop_check,
        ]
    constraint = partition_constraint(ctx.catalog, ctx.schema, partition)
    steps = []
    if constraint is not None:
        steps += [
            step(
                f"{key}-check",
                f"CHECK matching the bound on {partition}, NOT VALID",
                f"ALTER TABLE {part} ADD CONSTRAINT {check} CHECK ({constraint}) NOT VALID",
            ),
            validate_step(f"{key}-validate", ctx.schema, partition, bound_check_name(partition)),
        ]
    if ctx.server_version >= DETACH_CONCURRENTLY and not _has_default(ctx, table, partition):
        steps.append(
            step(
                key,
                f"detach {partition} from {table} concurrently",
                f"ALTER TABLE {parent} DETACH PARTITION {part} CONCURRENTLY",
                autocommit=True,
            )
        )
    else:
        ctx.notes.append(
            f"detach of {partition}: "
            + (
                f"PostgreSQL {ctx.server_version // 10000} has no DETACH ... CONCURRENTLY (14+)"
                if ctx.server_version < DETACH_CONCURRENTLY
                else f"{table} has a default partition, which DETACH ... CONCURRENTLY refuses"
            )
            + f"; the plain DETACH takes ACCESS EXCLUSIVE on {table} briefly"
        )
        steps.append(
            step(
                key,
                f"detach {partition} from {table}",
                f"ALTER TABLE {parent} DETACH PARTITION {part}",
            )
        )
    return [*steps, drop_check]


def _has_default(ctx: Context, table: str, partition: str) -> bool:
    return any(
        p.bound == "DEFAULT" and (p.schema, p.name) != (ctx.schema, partition)
        for p in partitions(ctx.catalog, ctx.schema, table)
        if p.level == 1
    )


def _refuse_taken(
    ctx: Context, where: str, table: str, name: str, what: str, schema: str | None = None
) -> None:
    """Refuse a copy's name something else holds; a failed (INVALID) or unrecorded
    (marked) earlier build of this very copy on this table is its own. ``table`` is in
    ``schema``, the plan's by default."""
    schema = ctx.schema if schema is None else schema
    # The plan's names are bare, in its schema; one in another schema is kept qualified,
    # so two partitions' copies of one name in two schemas are not one name taken twice.
    planned = name if schema == ctx.schema else f"{schema}.{name}"
    copy = ctx.catalog.index(schema, name)
    if (
        copy is not None
        and copy.table == table
        and (not copy.valid or copy.comment == index_mark(ctx.release))
    ):
        ctx.planned_relations.add(planned)
        return
    taken = (
        ctx.relation_taken(name)
        if schema == ctx.schema
        else planned in ctx.planned_relations or ctx.catalog.relation_kind(schema, name) is not None
    )
    if taken or replace(ctx, schema=schema).constraint_taken(table, name):
        raise ValidationFailed(
            f"{where}: the copy of {what} on {table} would be named {name}, which is taken"
        )
    ctx.planned_relations.add(planned)


class AttachPartition(Operation):
    """`attach_partition`: a table attached to a partitioned table, without a scan under
    a strong lock."""

    op_name: ClassVar[str] = "attach_partition"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier = Field(description="the partitioned table")
    partition: Identifier = Field(description="the table to attach")
    bound: str = Field(
        pattern=r"(?is)^\s*(for\s+values\s+.+|default)\s*$",
        description="the partition bound, as PostgreSQL writes it: "
        "FOR VALUES FROM (...) TO (...), FOR VALUES IN (...), "
        "FOR VALUES WITH (MODULUS m, REMAINDER r), or DEFAULT",
    )

    max_lock_hold: Duration = Field(
        default=1.0,
        description="for an exclusion constraint of the partitioned table that the table "
        "lacks (added to it first, the add_exclusion way): refuse when its index build and "
        "the rows' check, timed on a concurrent copy of the index, take longer",
    )

    def describe(self) -> str:
        return f"attach {self.partition} to {self.table}"

    def validate_live(self, ctx: Context) -> None:
        where = f"attach_partition {self.partition}"
        require_table(ctx, where, self.table)
        require_table(ctx, where, self.partition)
        if not is_partitioned(ctx.catalog, ctx.schema, self.table):
            raise ValidationFailed(f"{where}: {ctx.schema}.{self.table} is not partitioned")
        found = partition_of(ctx.catalog, ctx.schema, self.partition)
        if found is not None:
            raise ValidationFailed(
                f"{where}: {self.partition} is already a partition of {found.parent}"
            )
        trial = try_bound(ctx.catalog, ctx.schema, self.table, self.bound, name=self.partition)
        if trial.error is not None or trial.constraint is None:
            raise ValidationFailed(f"{where}: bound {self.bound.strip()}: {trial.error}")
        for column in nullable_columns(ctx, self.table, self.partition):
            nulls = ctx.catalog.null_count(ctx.schema, self.partition, column)
            if nulls:
                raise ValidationFailed(
                    f"{where}: column {column} of {self.partition} holds "
                    f"{count(nulls, 'NULL')}, and {self.table}.{column} is NOT NULL; fill "
                    "or delete those rows first"
                )
        partitioned = is_partitioned(ctx.catalog, ctx.schema, self.partition)
        for parent, name in missing_indexes(ctx, self.table, self.partition):
            if parent.constraint == "x":
                self._validate_exclusion(ctx, where, parent, name, partitioned)
                continue
            _refuse_taken(ctx, where, self.partition, name, f"{self.table}'s index {parent.name}")
            if not partitioned:
                continue
            if parent.constraint in ("u", "p"):
                columns = _index_columns(parent.definition)
                missing = partition_key_missing(ctx, self.partition, columns)
                if missing is None or missing:
                    raise ValidationFailed(
                        f"{where}: {self.partition} is partitioned by "
                        + (", ".join(missing) if missing else "an expression")
                        + f", which {parent.name} of {self.table} ({', '.join(columns)}) does "
                        f"not hold: PostgreSQL checks uniqueness per partition, so "
                        f"{self.partition} cannot have that constraint, and the attach "
                        "needs it"
                    )
            for part in partitions(ctx.catalog, ctx.schema, self.partition):
                _refuse_taken(
                    ctx,
                    where,
                    part.name,
                    partition_index_name(part.name, parent.name),
                    f"{self.table}'s index {parent.name}",
                    part.schema,
                )
        outside = rows_outside(ctx.catalog, ctx.schema, self.partition, trial.constraint)
        if outside:
            raise ValidationFailed(
                f"{where}: {self.partition} holds {count(outside, 'row')} outside "
                f"{self.bound.strip()}; move or delete them first"
            )

    def _validate_exclusion(
        self, ctx: Context, where: str, parent: TableIndex, name: str, partitioned: bool
    ) -> None:
        """An exclusion constraint of the parent the table lacks: add_exclusion's checks
        on its copy (conflicting rows counted where the table is small), or a refusal of
        what add_exclusion cannot do."""
        lacks = (
            f"the attach would build exclusion constraint {parent.name}'s index on "
            f"{self.partition} under its lock"
        )
        copy = exclusion_copy(ctx, self.table, self.partition, parent, name, self.max_lock_hold)
        if isinstance(copy, str):
            raise ValidationFailed(
                f"{where}: {lacks}, and migrator cannot copy it ({copy}); give "
                f"{self.partition} the same constraint first"
            )
        if not partitioned:
            self._validate_copy(ctx, where, parent, copy)
            return
        # PostgreSQL takes an exclusion constraint on a partitioned table only over its
        # partition key with = (each leaf's index then decides alone).
        equal = [e.column for e in copy.elements if e.with_ == "="]
        missing = partition_key_missing(ctx, self.partition, equal)
        if missing is None or missing:
            raise ValidationFailed(
                f"{where}: {lacks}, and {self.partition} is partitioned by "
                + (", ".join(missing) if missing else "an expression")
                + f", which {parent.name} does not compare with =: PostgreSQL takes an "
                "exclusion constraint on a partitioned table only over its partition key "
                f"with =, so {self.partition} cannot have it, and the attach needs it"
            )
        what = f"{self.table}'s exclusion constraint {parent.name}"
        _refuse_taken(ctx, where, self.partition, name, what)
        for part in partitions(ctx.catalog, ctx.schema, self.partition):
            own = partition_index_name(part.name, parent.name)
            if part.partitioned:
                _refuse_taken(ctx, where, part.name, own, what, part.schema)
                continue
            leaf = copy.model_copy(update={"table": part.name, "name": own})
            self._validate_copy(replace(ctx, schema=part.schema), where, parent, leaf)

    def _validate_copy(
        self, ctx: Context, where: str, parent: TableIndex, copy: AddExclusion
    ) -> None:
        """add_exclusion's own checks of one copy (its table not partitioned)."""
        try:
            copy.validate_live(ctx)
        except ValidationFailed as exc:
            reason = str(exc).removeprefix(f"add_exclusion {copy.name}: ")
            raise ValidationFailed(
                f"{where}: the copy of {self.table}'s exclusion constraint {parent.name} on "
                f"{copy.table} ({copy.name}): {reason}"
            ) from None

    def expand(self, ctx: Context) -> Sequence[Step]:
        return (
            not_null_steps(ctx, "attach", self.table, self.partition)
            + index_steps(ctx, "attach", self.table, self.partition, self.max_lock_hold)
            + attach_steps(ctx, "attach", self.table, self.partition, self.bound.strip())
        )

    def contract(self, ctx: Context) -> Sequence[Step]:
        forget = (
            [forget_not_null_step(ctx, "forget-not-null", self.partition)]
            if saved_not_null(ctx.schema, self.partition).exists(ctx)
            else []
        )
        return forget + [
            step(
                f"unmark-{index.name}",
                f"index {index.name} recorded: clear its build mark",
                unmark_index_sql(schema, index.name),
            )
            for schema, _, index, _ in built_tree_indexes(ctx, self.partition)
        ]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        steps = detach_steps(ctx, "detach", self.table, self.partition)
        # Top down: a partitioned index (or constraint) takes those attached below it.
        for schema, table, index, partitioned in built_tree_indexes(ctx, self.partition):
            if index.constraint is not None:
                steps.append(
                    drop_constraint_step(f"drop-{index.name}-constraint", schema, table, index.name)
                )
            elif partitioned:
                steps.append(drop_partitioned_index_step(f"drop-{index.name}", schema, index.name))
                continue
            steps.append(
                drop_index_step(
                    f"drop-{index.name}",
                    f"drop index {index.name}, built for the attach",
                    schema,
                    index.name,
                )
            )
        # The tables an exclusion's copy went on: the table, or each leaf under it.
        leaves = [(ctx.schema, self.partition)] + [
            (p.schema, p.name)
            for p in partitions(ctx.catalog, ctx.schema, self.partition)
            if not p.partitioned
        ]
        for parent in table_indexes(ctx.catalog, ctx.schema, self.table):
            if parent.constraint != "x":
                continue
            for schema, leaf in leaves:
                helper = helper_index_name(partition_index_name(leaf, parent.name))
                if ctx.catalog.index(schema, helper) is not None:
                    steps.append(
                        drop_index_step(
                            f"drop-{helper}",
                            f"drop the helper index {helper} a stopped run left",
                            schema,
                            helper,
                        )
                    )
        return steps + undo_not_null_steps(ctx, "undo", self.partition)
