"""The `attach_partition` operation: a table becomes a partition of a partitioned table.

ATTACH PARTITION scans the table for rows outside the bound while it holds ACCESS
EXCLUSIVE on it, unless a validated CHECK already proves the bound. So: the partition
constraint the bound means (PostgreSQL's own, pg_get_partition_constraintdef of a
scratch partition) is added as a CHECK NOT VALID (brief lock, no scan), validated in
its own transaction (SHARE UPDATE EXCLUSIVE: reads and writes go on), then the attach
skips its scan (SHARE UPDATE EXCLUSIVE on the parent), and the CHECK is dropped. A bound
that overlaps a partition, or rows outside it, are refused before anything runs. The
rollback detaches it again (CONCURRENTLY where the version has it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.engine.catalog_partitions import (
    is_partitioned,
    partition_constraint,
    partition_of,
    rows_outside,
    try_bound,
)
from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.safe import validate_step
from migrator.ops.validation import require_table
from migrator.sqltext import ident, short_name
from migrator.words import count

# DETACH PARTITION ... CONCURRENTLY is PostgreSQL 14+.
DETACH_CONCURRENTLY = 140000


def bound_check_name(partition: str) -> str:
    """The temporary CHECK that proves a partition's rows fit its bound."""
    return short_name(partition, "bound", prefix="_migrator_")


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
        outside = rows_outside(ctx.catalog, ctx.schema, self.partition, trial.constraint)
        if outside:
            raise ValidationFailed(
                f"{where}: {self.partition} holds {count(outside, 'row')} outside "
                f"{self.bound.strip()}; move or delete them first"
            )

    def expand(self, ctx: Context) -> Sequence[Step]:
        return attach_steps(ctx, "attach", self.table, self.partition, self.bound.strip())

    def rollback(self, ctx: Context) -> Sequence[Step]:
        return detach_steps(ctx, "detach", self.table, self.partition)
