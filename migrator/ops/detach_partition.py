"""The `detach_partition` operation: a partition leaves its partitioned table.

DETACH PARTITION ... CONCURRENTLY (PostgreSQL 14+; two transactions, SHARE UPDATE
EXCLUSIVE on the parent) where the version and the table allow it, else the plain
DETACH (brief ACCESS EXCLUSIVE on the parent), after a validated CHECK of the bound so
the detached table keeps no constraint of PostgreSQL's naming. The bound is saved first
(a function in the migrator schema) so the rollback can re-attach the table the
lock-safe way (attach_partition's steps); the contract forgets it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.engine.catalog_partitions import partition_of
from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.attach_partition import attach_steps, detach_steps
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.records import SavedRecord
from migrator.ops.validation import require_table
from migrator.sqltext import short_name


class DetachPartition(Operation):
    """`detach_partition`: concurrently where PostgreSQL can; the rollback re-attaches."""

    op_name: ClassVar[str] = "detach_partition"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier = Field(description="the partitioned table")
    partition: Identifier = Field(description="the partition to detach")

    def describe(self) -> str:
        return f"detach {self.partition} from {self.table}"

    def _record(self, ctx: Context) -> SavedRecord:
        """The record of the partition's bound."""
        return SavedRecord(short_name(ctx.schema, self.partition, "bound"))

    def validate_live(self, ctx: Context) -> None:
        where = f"detach_partition {self.partition}"
        require_table(ctx, where, self.table)
        found = partition_of(ctx.catalog, ctx.schema, self.partition)
        if found is None or found.parent != self.table:
            raise ValidationFailed(
                f"{where}: {ctx.schema}.{self.partition} is not a partition of {self.table}"
            )

    def expand(self, ctx: Context) -> Sequence[Step]:
        steps = []
        found = partition_of(ctx.catalog, ctx.schema, self.partition)
        if found is not None and found.parent == self.table and not found.detach_pending:
            saved = json.dumps({"bound": found.bound})
            steps.append(
                step(
                    "save-bound",
                    f"remember {self.partition}'s bound for the rollback",
                    *self._record(ctx).save_sql(saved),
                )
            )
        return steps + detach_steps(ctx, "detach", self.table, self.partition)

    def _forget(self, ctx: Context, key: str) -> Step:
        return step(
            key,
            f"forget {self.partition}'s saved bound",
            self._record(ctx).forget_sql(),
        )

    def contract(self, ctx: Context) -> Sequence[Step]:
        return [self._forget(ctx, "forget")]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        found = partition_of(ctx.catalog, ctx.schema, self.partition)
        saved = None if found is not None else self._record(ctx).read(ctx)
        if saved is None:
            return [self._forget(ctx, "forget")]  # never detached
        bound = str(json.loads(saved)["bound"])
        return [
            *attach_steps(ctx, "reattach", self.table, self.partition, bound),
            self._forget(ctx, "forget"),
        ]
