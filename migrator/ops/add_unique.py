"""The `add_unique` operation.

ADD CONSTRAINT ... UNIQUE builds its index under ACCESS EXCLUSIVE. Instead the expand
builds a unique index CONCURRENTLY in an autocommit block (an INVALID leftover of a
failed build is dropped first), then attaches it with ADD CONSTRAINT ... UNIQUE USING
INDEX, which holds its lock only for the catalog change. Duplicates already in the
table are counted before anything runs and named in the refusal. The rollback drops
the constraint and any index left without it.

On a partitioned table (which refuses USING INDEX) each leaf partition gets that index
and constraint, then the constraint is added to the table, which adopts theirs without
a build (ops/partitioned.py); it must hold every column of the partition key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.engine.catalog_partitions import is_partitioned
from migrator.engine.steps import Step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.partitioned import (
    drop_unique_per_partition_steps,
    partition_key_missing,
    refuse_unique_without_partition_key,
    unique_clashes,
    unique_per_partition_steps,
)
from migrator.ops.safe import drop_unique_steps, is_ours, unique_steps
from migrator.ops.validation import (
    refuse_constraint_clash,
    refuse_duplicates,
    refuse_index_name_taken,
    require_columns,
    require_table,
)


class AddUnique(Operation):
    """`add_unique`: a concurrent unique index, then the constraint using it."""

    op_name: ClassVar[str] = "add_unique"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    name: Identifier
    columns: list[Identifier] = Field(min_length=1)

    def describe(self) -> str:
        return f"unique {self.name} on {self.table}"

    def validate_live(self, ctx: Context) -> None:
        where = f"add_unique {self.name}"
        require_table(ctx, where, self.table)
        require_columns(ctx, where, self.table, self.columns)
        refuse_constraint_clash(ctx, where, self.table, self.name)
        if self._partitioned(ctx):
            missing = partition_key_missing(ctx, self.table, self.columns)
            refuse_unique_without_partition_key(where, "a UNIQUE constraint", self.table, missing)
            taken = unique_clashes(ctx, self.table, self.name)
            if taken:
                raise ValidationFailed(
                    f"{where}: a partition's constraint would be named {taken[0]}, which is "
                    "taken; choose another name"
                )
        refuse_index_name_taken(ctx, where, self.table, self.name, unbound=True)
        refuse_duplicates(ctx, where, self.table, self.columns)
        ctx.planned_relations.add(self.name)

    def _partitioned(self, ctx: Context) -> bool:
        return self.table not in ctx.planned_tables and is_partitioned(
            ctx.catalog, ctx.schema, self.table
        )

    def expand(self, ctx: Context) -> Sequence[Step]:
        if self._partitioned(ctx):
            return unique_per_partition_steps(ctx, "unique", self.table, self.name, self.columns)
        existing = ctx.catalog.index(ctx.schema, self.name)
        return unique_steps(
            "unique",
            ctx.schema,
            self.table,
            self.name,
            self.columns,
            release=ctx.release,
            reuse_index=is_ours(existing, self.table, ctx.release),
        )

    def rollback(self, ctx: Context) -> Sequence[Step]:
        if self._partitioned(ctx):
            return drop_unique_per_partition_steps(ctx, "drop-unique", self.table, self.name)
        return drop_unique_steps("drop-unique", ctx.schema, self.table, self.name)
