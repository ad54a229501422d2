"""Indexes on partitioned tables, built the lock-safe way, partition by partition.

PostgreSQL refuses CREATE INDEX CONCURRENTLY on a partitioned table, and a plain CREATE
INDEX on one holds SHARE on every partition (writes blocked) for the whole build. So:

1. ``CREATE INDEX ... ON ONLY`` the parent: an empty, INVALID index, catalog only;
2. per partition, in its own autocommit block, ``CREATE INDEX CONCURRENTLY`` on it and
   ``ALTER INDEX parent ATTACH PARTITION`` (a brief lock, no build); a sub-partitioned
   partition gets its own ``ON ONLY`` index attached the same way;
3. once every partition's index is attached PostgreSQL marks the parent's valid.

Each partition is its own step, so an interrupted build resumes at the first partition
not recorded. A rerun of a partition's block reads the catalog afresh: an index left
INVALID by a failed build is dropped and built again; one built but not yet attached is
attached. A partition created while the release is in flight gets the index from the
parent by itself (CREATE TABLE ... PARTITION OF clones the parent's indexes).

Dropping a partitioned index cannot be CONCURRENTLY, and the index of a partition
cannot be dropped while attached: ``DROP INDEX`` of the parent is the least-locking
form, ACCESS EXCLUSIVE on the table and its partitions for the catalog change only (no
scan), under lock_timeout with retries like every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from migrator.engine.catalog_partitions import (
    Partition,
    is_partitioned,
    partition_index,
    partition_key_columns,
    partitions,
)
from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context
from migrator.ops.safe import (
    IndexShape,
    drop_constraint_step,
    drop_foreign_key_step,
    drop_index_step,
    index_mark,
    is_ours,
    unique_steps,
    unmark_index_sql,
    validate_step,
)
from migrator.sqltext import ident, literal, short_name


def partition_index_name(partition: str, index: str) -> str:
    """The name of a partitioned index's index on one partition."""
    return short_name(partition, index)


def _attach_sql(parent: tuple[str, str], index: tuple[str, str]) -> str:
    # Attaching an index that is already attached to this parent does nothing: rerunnable.
    # An index lives in its table's schema: a partition's may be in another than its parent's.
    return f"ALTER INDEX {ident(*parent)} ATTACH PARTITION {ident(*index)}"


def partition_step_key(key: str, schema: str, part: Partition, parts: Sequence[Partition]) -> str:
    """The step key of a partition's step: ``KEY-partition``, or ``KEY-schema.partition``
    for one in another schema than the table (``schema``) whose name another of the
    table's partitions (``parts``) has too, so two partitions of one name never share a
    step record (a rerun would skip the second as done). Every other partition keeps the
    key it always had, so a release started before resumes where it was (a new key would
    run its step again)."""
    shared = any(p.name == part.name and p.schema != part.schema for p in parts)
    if part.schema == schema or not shared:
        return f"{key}-{part.name}"
    return f"{key}-{part.schema}.{part.name}"


def partitioned_index_steps(
    ctx: Context, key: str, table: str, name: str, shape: IndexShape
) -> list[Step]:
    """The steps that build index ``name`` on partitioned ``table`` (see the module)."""

    def sql(schema: str, table: str, index: str, only: bool) -> str:
        # ON ONLY a partitioned level: IF NOT EXISTS, as it builds nothing; a leaf's
        # block drops an INVALID leftover first, so it creates afresh.
        return shape.create_sql(schema, table, index, if_not_exists=only, only=only)

    schema = ctx.schema
    steps = [
        step(
            key,
            f"index {name} on ONLY {table} (empty until its partitions' are attached)",
            sql(schema, table, name, True),
            f"COMMENT ON INDEX {ident(schema, name)} IS {literal(index_mark(ctx.release))}",
        )
    ]
    owner = {(schema, table): name}
    parts = partitions(ctx.catalog, schema, table)
    for part in parts:
        parent_index = owner[(part.parent_schema, part.parent)]
        child = partition_index_name(part.name, name)
        owner[(part.schema, part.name)] = child
        attach = _attach_sql((part.parent_schema, parent_index), (part.schema, child))
        part_key = partition_step_key(key, schema, part, parts)
        if part.partitioned:
            steps.append(
                step(
                    part_key,
                    f"index {child} on ONLY {part.name}, attached to {parent_index}",
                    sql(part.schema, part.name, child, True),
                    attach,
                )
            )
            continue
        found = partition_index(ctx.catalog, part.schema, child)
        if found is not None and found.valid:
            # Built by an earlier run that stopped before the attach (or after it).
            statements = [attach]
        else:
            statements = [
                f"DROP INDEX CONCURRENTLY IF EXISTS {ident(part.schema, child)}",
                sql(part.schema, part.name, child, False),
                attach,
            ]
        steps.append(
            step(
                part_key,
                f"index {child} on partition {part.name}, built concurrently and attached",
                *statements,
                autocommit=True,
            )
        )
    steps.append(
        step(
            f"{key}-done",
            f"index {name}: every partition's attached, clear its build mark",
            unmark_index_sql(schema, name),
        )
    )
    return steps


def partition_index_clashes(ctx: Context, table: str, name: str) -> list[str]:
    """Names the partitions' indexes would take that something else holds already.

    Asked before the first step runs, so any relation of such a name is a clash."""
    return [
        partition_index_name(p.name, name)
        for p in partitions(ctx.catalog, ctx.schema, table)
        if ctx.catalog.relation_kind(p.schema, partition_index_name(p.name, name)) is not None
    ]


def drop_partitioned_index_step(key: str, schema: str, name: str) -> Step:
    """DROP INDEX (not CONCURRENTLY: PostgreSQL refuses it for a partitioned index)."""
    return step(
        key,
        f"drop partitioned index {name}: brief ACCESS EXCLUSIVE on the table and its "
        "partitions, no scan",
        f"DROP INDEX IF EXISTS {ident(schema, name)}",
    )


# ADD FOREIGN KEY ... NOT VALID on a partitioned table: PostgreSQL 18+ (before, "cannot
# add NOT VALID foreign key on partitioned table").
FOREIGN_KEY_NOT_VALID = 180000


def bottom_up(ctx: Context, table: str) -> list[Partition]:
    """The table's partitions, the deepest first (each level by name)."""
    return sorted(partitions(ctx.catalog, ctx.schema, table), key=lambda p: -p.level)


def foreign_key_per_partition_steps(
    ctx: Context, key: str, table: str, name: str, add: Callable[[str, str, str, bool, str], Step]
) -> list[Step]:
    """Foreign key ``name`` on partitioned ``table`` where PostgreSQL (before 18) cannot
    add it NOT VALID there: NOT VALID on each leaf partition (brief SHARE ROW
    EXCLUSIVE, no scan), VALIDATE each (SHARE UPDATE EXCLUSIVE: reads and writes go
    on), then the same key on each sub-partitioned partition, deepest first, and on the
    table: PostgreSQL attaches the partitions' validated constraints instead of scanning
    (SHARE ROW EXCLUSIVE on the table and its partitions, ACCESS EXCLUSIVE on the
    referenced table where it drops the partitions' own action triggers: the catalog
    change only; bench/partitions.py). Each statement its own step, so a stop resumes where it was.

    ``add(schema, table, key, valid, description)`` is the ADD CONSTRAINT step on one
    table (a partition may be in another schema than ``table``; the referenced table is
    in ``table``'s).
    """
    steps: list[Step] = []
    parts = bottom_up(ctx, table)
    for part in parts:
        if part.partitioned:
            continue
        part_key = partition_step_key(key, ctx.schema, part, parts)
        steps.append(
            add(
                part.schema,
                part.name,
                part_key,
                False,
                f"foreign key {name} on {part.name}, NOT VALID",
            )
        )
        steps.append(validate_step(f"{part_key}-validate", part.schema, part.name, name))
    attaches = "valid: attaches its partitions' validated ones (no scan)"
    for part in parts:
        if part.partitioned:
            steps.append(
                add(
                    part.schema,
                    part.name,
                    partition_step_key(key, ctx.schema, part, parts),
                    True,
                    f"foreign key {name} on {part.name}, {attaches}",
                )
            )
    steps.append(add(ctx.schema, table, key, True, f"foreign key {name} on {table}, {attaches}"))
    return steps


def drop_per_partition_steps(
    ctx: Context, key: str, table: str, name: str, references: str
) -> list[Step]:
    """Undo a foreign key added partition by partition: the table's (which takes the
    attached ones with it), then what a stopped run left on partitions, top down; each
    where it stands locks the table it ``references`` first (`drop_foreign_key_step`)."""

    def drop(key: str, schema: str, table: str, standalone: bool) -> Step:
        # A partition's key attached to its parent's goes with that one's DROP: its
        # own step drops nothing, and takes no lock (before, one ACCESS EXCLUSIVE on
        # the referenced table per partition, each queued behind its readers).
        exists = ctx.catalog.constraint_exists(schema, table, name, standalone=standalone)
        return drop_foreign_key_step(
            key,
            schema,
            table,
            name,
            (ctx.schema, references) if exists else None,
            catalog=ctx.catalog,
        )

    steps = [drop(key, ctx.schema, table, False)]
    parts = bottom_up(ctx, table)
    for part in reversed(parts):
        steps.append(
            drop(partition_step_key(key, ctx.schema, part, parts), part.schema, part.name, True)
        )
    return steps


def foreign_key_per_partition(ctx: Context, table: str) -> bool:
    """True where a foreign key on ``table`` goes partition by partition: a partitioned
    table (not one the plan creates, which is never partitioned) before PostgreSQL 18."""
    return (
        ctx.server_version < FOREIGN_KEY_NOT_VALID
        and table not in ctx.planned_tables
        and is_partitioned(ctx.catalog, ctx.schema, table)
    )


def foreign_key_steps(
    ctx: Context, key: str, table: str, name: str, add: Callable[[str, str, str, bool, str], Step]
) -> list[Step]:
    """The expand's steps of foreign key ``name`` on ``table``: added NOT VALID (the
    contract validates it), or where `foreign_key_per_partition`, added and validated
    leaf by leaf (`foreign_key_per_partition_steps`; the contract has nothing left).
    ``add`` is as there."""
    if foreign_key_per_partition(ctx, table):
        return foreign_key_per_partition_steps(ctx, key, table, name, add)
    return [add(ctx.schema, table, key, False, f"foreign key {name} on {table}, NOT VALID")]


def refuse_partition_constraint_clash(ctx: Context, where: str, table: str, name: str) -> None:
    """A partition already holding a constraint of the name a foreign key added to the
    table gives each of them (PostgreSQL's clones, or the per-leaf route's) is refused."""
    if table in ctx.planned_tables or not is_partitioned(ctx.catalog, ctx.schema, table):
        return
    for part in partitions(ctx.catalog, ctx.schema, table):
        if ctx.catalog.constraint_exists(part.schema, part.name, name):
            raise ValidationFailed(
                f"{where}: partition {part.name} already has a constraint named {name}"
            )


def partition_key_missing(ctx: Context, table: str, columns: Sequence[str]) -> list[str] | None:
    """The columns of the partition key, at every level under ``table``, that ``columns``
    lacks (PostgreSQL checks uniqueness per leaf, so a unique key needs them all); None
    when a key holds an expression, which no unique key can."""
    key: list[str] = []
    # Each level is read in its own schema: a sub-partitioned partition may live elsewhere.
    for schema, level in [(ctx.schema, table)] + [
        (p.schema, p.name) for p in partitions(ctx.catalog, ctx.schema, table) if p.partitioned
    ]:
        found = partition_key_columns(ctx.catalog, schema, level)
        if found is None:
            return None
        key += found
    return list(dict.fromkeys(c for c in key if c not in columns))


def refuse_unique_without_partition_key(
    where: str, what: str, table: str, missing: list[str] | None, hint: str = ""
) -> None:
    """One line naming the partition key's columns a unique key on ``table`` lacks
    (``hint``, if any, what to write instead, when no expression is in the way)."""
    if missing is None or missing:
        raise ValidationFailed(
            f"{where}: {what} on partitioned table {table} must hold every column of its "
            "partition key"
            + (
                f" ({', '.join(missing)} is missing)"
                if missing
                else " (an expression is part of it)"
            )
            + " (PostgreSQL checks uniqueness per partition)"
            + (f"; {hint}" if hint and missing else "")
        )


def unique_clashes(ctx: Context, table: str, name: str) -> list[str]:
    """Names the partitions' unique constraints would take that something else holds; a
    leaf's valid index this release built and did not record yet is its own."""
    taken = []
    for part in partitions(ctx.catalog, ctx.schema, table):
        own = partition_index_name(part.name, name)
        found = ctx.catalog.index(part.schema, own)
        if found is not None and not part.partitioned and found.constraint is None:
            if not found.valid or is_ours(found, part.name, ctx.release):
                continue  # a failed or unrecorded build of this very index
        if ctx.catalog.relation_kind(part.schema, own) is not None or ctx.constraint_taken(
            part.name, own
        ):
            taken.append(own)
    return taken


def unique_per_partition_steps(
    ctx: Context, key: str, table: str, name: str, columns: Sequence[str]
) -> list[Step]:
    """UNIQUE ``name`` on partitioned ``table`` without a build under a strong lock.

    PostgreSQL refuses ``ADD CONSTRAINT ... USING INDEX`` on a partitioned table, but
    ``ADD CONSTRAINT ... UNIQUE`` there adopts, instead of building, an index of the
    same definition a partition holds as a UNIQUE constraint of its own (an index alone
    is not enough). So: on each leaf partition the unique index built CONCURRENTLY and
    made its constraint USING INDEX (brief ACCESS EXCLUSIVE on that leaf, no scan); then
    the constraint on each sub-partitioned partition, deepest first, and on the table,
    each attaching what is below it: ACCESS EXCLUSIVE on the table for the catalog change
    (and SHARE, on 18 ACCESS EXCLUSIVE, on its partitions), no build and no scan.
    """
    cols = ", ".join(ident(c) for c in columns)
    steps: list[Step] = []
    parts = bottom_up(ctx, table)
    for part in parts:
        if part.partitioned:
            continue
        own = partition_index_name(part.name, name)
        steps += unique_steps(
            partition_step_key(key, ctx.schema, part, parts),
            part.schema,
            part.name,
            own,
            columns,
            release=ctx.release,
            reuse_index=is_ours(ctx.catalog.index(part.schema, own), part.name, ctx.release),
        )
    attaches = "attaches its partitions' (no build, no scan)"
    for part in parts:
        if part.partitioned:
            own = partition_index_name(part.name, name)
            steps.append(
                step(
                    partition_step_key(key, ctx.schema, part, parts),
                    f"UNIQUE {own} on {part.name}: {attaches}",
                    f"ALTER TABLE {ident(part.schema, part.name)} ADD CONSTRAINT {ident(own)} "
                    f"UNIQUE ({cols})",
                )
            )
    steps.append(
        step(
            key,
            f"UNIQUE {name} on {table}: {attaches}",
            f"ALTER TABLE {ident(ctx.schema, table)} ADD CONSTRAINT {ident(name)} UNIQUE ({cols})",
        )
    )
    return steps


def drop_unique_per_partition_steps(ctx: Context, key: str, table: str, name: str) -> list[Step]:
    """Undo `unique_per_partition_steps`: the table's constraint (its index takes the
    attached ones), then what a stopped run left on partitions."""
    steps = [drop_constraint_step(f"{key}-constraint", ctx.schema, table, name)]
    parts = bottom_up(ctx, table)
    for part in reversed(parts):
        own = partition_index_name(part.name, name)
        part_key = partition_step_key(key, ctx.schema, part, parts)
        steps.append(drop_constraint_step(part_key, part.schema, part.name, own))
        if not part.partitioned:
            steps.append(
                drop_index_step(
                    f"{part_key}-index",
                    f"drop index {own} if it is still there",
                    part.schema,
                    own,
                )
            )
    return steps
