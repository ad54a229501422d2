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
them (and only them) after the detach.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import ClassVar

import pglast
from pglast import ast
from pglast.stream import RawStream
from pydantic import Field

from migrator.engine.catalog_columns import function_exists, function_text
from migrator.engine.catalog_partitions import (
    TableIndex,
    is_partitioned,
    partition_constraint,
    partition_of,
    rows_outside,
    table_indexes,
    try_bound,
)
from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.partitioned import partition_index_name
from migrator.ops.safe import (
    drop_constraint_step,
    drop_index_step,
    index_mark,
    unmark_index_sql,
    validate_step,
)
from migrator.ops.validation import require_table
from migrator.sqltext import dollar_quoted, ident, literal, private_function_sql, short_name
from migrator.words import count

# DETACH PARTITION ... CONCURRENTLY is PostgreSQL 14+.
DETACH_CONCURRENTLY = 140000


def bound_check_name(partition: str) -> str:
    """The temporary CHECK that proves a partition's rows fit its bound."""
    return short_name(partition, "bound", prefix="_migrator_")


def not_null_check_name(partition: str, column: str) -> str:
    """The temporary CHECK (column IS NOT NULL) that lets SET NOT NULL skip its scan."""
    return short_name(partition, column, "nn", prefix="_migrator_")


def saved_not_null(schema: str, partition: str) -> tuple[str, str]:
    """The function keeping the columns the attach made NOT NULL, for the rollback."""
    return "migrator", short_name(schema, partition, "not_null")


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
    schema, name = saved_not_null(ctx.schema, partition)
    steps = []
    if not function_exists(ctx.catalog, schema, name):
        saved = json.dumps(columns)
        steps.append(
            step(
                f"{key}-save-not-null",
                f"remember the columns of {partition} made NOT NULL, for the rollback",
                f"CREATE OR REPLACE FUNCTION {ident(schema, name)}() RETURNS text "
                f"LANGUAGE sql IMMUTABLE AS {dollar_quoted(f' SELECT {literal(saved)} ')}",
                private_function_sql(ident(schema, name)),
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


def undo_not_null_steps(ctx: Context, key: str, partition: str) -> list[Step]:
    """After the detach: DROP NOT NULL on the columns the attach made NOT NULL (catalog
    only), any helper CHECK a stopped run left, and the saved list."""
    schema, name = saved_not_null(ctx.schema, partition)
    if not function_exists(ctx.catalog, schema, name):
        return []
    part = ident(ctx.schema, partition)
    columns = [str(c) for c in json.loads(function_text(ctx.catalog, ident(schema, name)))]
    return [
        *(
            step(
                f"{key}-not-null-{column}",
                f"{partition}.{column} nullable again",
                f"ALTER TABLE {part} DROP CONSTRAINT IF EXISTS "
                f"{ident(not_null_check_name(partition, column))}",
                f"ALTER TABLE {part} ALTER COLUMN {ident(column)} DROP NOT NULL",
            )
            for column in columns
        ),
        forget_not_null_step(ctx, f"{key}-forget-not-null", partition),
    ]


def forget_not_null_step(ctx: Context, key: str, partition: str) -> Step:
    return step(
        key,
        f"forget the columns of {partition} made NOT NULL",
        f"DROP FUNCTION IF EXISTS {ident(*saved_not_null(ctx.schema, partition))}()",
    )


def _index_sql(definition: str, schema: str, table: str, name: str, if_not_exists: bool) -> str:
    """An index's definition (pg_get_indexdef) as CREATE INDEX CONCURRENTLY on another
    table under another name; with ``table`` empty, the definition with no name or table
    (what two indexes must share to match)."""
    stmt = pglast.parse_sql(definition)[0].stmt
    assert isinstance(stmt, ast.IndexStmt)
    stmt.idxname = name or None
    stmt.relation = ast.RangeVar(
        schemaname=schema or None, relname=table or "t", inh=True, relpersistence="p"
    )
    stmt.concurrent = bool(table)
    stmt.if_not_exists = if_not_exists
    return str(RawStream()(stmt))


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


def index_steps(ctx: Context, key: str, table: str, partition: str) -> list[Step]:
    """Each index of the parent that ``partition`` lacks, built concurrently (see the
    module): an INVALID leftover of a failed build is dropped first; a valid one this
    release built is kept (IF NOT EXISTS)."""
    steps = []
    mark = literal(index_mark(ctx.release))
    part = ident(ctx.schema, partition)
    for parent, name in missing_indexes(ctx, table, partition):
        found = ctx.catalog.index(ctx.schema, name)
        reuse = found is not None and found.valid and found.comment == index_mark(ctx.release)
        create = _index_sql(parent.definition, ctx.schema, partition, name, reuse)
        steps.append(
            step(
                f"{key}-index-{parent.name}",
                f"index {name} on {partition}, as {table}'s {parent.name}, built concurrently",
                *(
                    []
                    if reuse
                    else [f"DROP INDEX CONCURRENTLY IF EXISTS {ident(ctx.schema, name)}"]
                ),
                create,
                f"COMMENT ON INDEX {ident(ctx.schema, name)} IS {mark}",
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


def built_indexes(ctx: Context, partition: str) -> list[TableIndex]:
    """The partition's indexes this release built (they carry its build mark)."""
    return [
        i
        for i in table_indexes(ctx.catalog, ctx.schema, partition)
        if i.comment == index_mark(ctx.release)
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
    from migrator.engine.catalog_partitions import partitions

    return any(
        p.bound == "DEFAULT" and p.name != partition
        for p in partitions(ctx.catalog, ctx.schema, table)
        if p.level == 1
    )


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
        for parent, name in missing_indexes(ctx, self.table, self.partition):
            if parent.constraint == "x":
                raise ValidationFailed(
                    f"{where}: the attach would build exclusion constraint {parent.name}'s "
                    f"index on {self.partition} under its lock; give {self.partition} a "
                    "matching exclusion constraint first"
                )
            copy = ctx.catalog.index(ctx.schema, name)
            # A failed (INVALID) or unrecorded (marked) earlier build of this very copy.
            earlier = (
                copy is not None
                and copy.table == self.partition
                and copy.constraint is None
                and (not copy.valid or copy.comment == index_mark(ctx.release))
            )
            if (not earlier and ctx.relation_taken(name)) or ctx.constraint_taken(
                self.partition, name
            ):
                raise ValidationFailed(
                    f"{where}: the copy of {self.table}'s index {parent.name} on "
                    f"{self.partition} would be named {name}, which is taken"
                )
            ctx.planned_relations.add(name)
        outside = rows_outside(ctx.catalog, ctx.schema, self.partition, trial.constraint)
        if outside:
            raise ValidationFailed(
                f"{where}: {self.partition} holds {count(outside, 'row')} outside "
                f"{self.bound.strip()}; move or delete them first"
            )

    def expand(self, ctx: Context) -> Sequence[Step]:
        return (
            not_null_steps(ctx, "attach", self.table, self.partition)
            + index_steps(ctx, "attach", self.table, self.partition)
            + attach_steps(ctx, "attach", self.table, self.partition, self.bound.strip())
        )

    def contract(self, ctx: Context) -> Sequence[Step]:
        forget = (
            [forget_not_null_step(ctx, "forget-not-null", self.partition)]
            if function_exists(ctx.catalog, *saved_not_null(ctx.schema, self.partition))
            else []
        )
        return forget + [
            step(
                f"unmark-{index.name}",
                f"index {index.name} recorded: clear its build mark",
                unmark_index_sql(ctx.schema, index.name),
            )
            for index in built_indexes(ctx, self.partition)
        ]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        steps = detach_steps(ctx, "detach", self.table, self.partition)
        for index in built_indexes(ctx, self.partition):
            if index.constraint is not None:
                steps.append(
                    drop_constraint_step(
                        f"drop-{index.name}-constraint", ctx.schema, self.partition, index.name
                    )
                )
            steps.append(
                drop_index_step(
                    f"drop-{index.name}",
                    f"drop index {index.name}, built for the attach",
                    ctx.schema,
                    index.name,
                )
            )
        return steps + undo_not_null_steps(ctx, "undo", self.partition)
