"""The `drop_index` operation (contract only).

DROP INDEX CONCURRENTLY IF EXISTS, in an autocommit block: no ACCESS EXCLUSIVE, and a
rerun is harmless. An index that backs a constraint cannot be dropped on its own (the
refusal says to use drop_constraint), and one a foreign key relies on is refused with
the foreign key named.

A partitioned index cannot be dropped CONCURRENTLY (PostgreSQL refuses it) and the
index of a partition cannot be dropped while attached: the parent's DROP INDEX, in a
transaction under lock_timeout, is the least-locking form; it holds ACCESS EXCLUSIVE on
the table and every partition for the catalog change only, no scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from migrator.engine.steps import Step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.partitioned import drop_partitioned_index_step
from migrator.ops.safe import drop_index_step
from migrator.ops.validation import refuse_dependants


class DropIndex(Operation):
    """`drop_index`: concurrently, once the old version is gone."""

    op_name: ClassVar[str] = "drop_index"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"contract"})
    where_it_belongs: ClassVar[str] = (
        "the old version's queries may rely on the index; put it under contract:"
    )
    name: Identifier

    def describe(self) -> str:
        return f"drop index {self.name}"

    def validate_live(self, ctx: Context) -> None:
        where = f"drop_index {self.name}"
        found = ctx.catalog.index(ctx.schema, self.name)
        if found is None:
            raise ValidationFailed(f"{where}: index {ctx.schema}.{self.name} does not exist")
        if found.constraint is not None:
            raise ValidationFailed(
                f"{where}: the index backs constraint {found.constraint} on {found.table}; "
                f"use drop_constraint {{table: {found.table}, name: {found.constraint}}}"
            )
        refuse_dependants(
            where, f"index {self.name}", ctx.catalog.index_dependants(ctx.schema, self.name)
        )

    def contract(self, ctx: Context) -> Sequence[Step]:
        if ctx.catalog.relation_kind(ctx.schema, self.name) == "I":
            ctx.notes.append(
                f"drop_index {self.name}: a partitioned index cannot be dropped "
                "CONCURRENTLY; DROP INDEX takes ACCESS EXCLUSIVE on the table and its "
                "partitions for the catalog change only (no scan)"
            )
            return [drop_partitioned_index_step("drop-index", ctx.schema, self.name)]
        return [
            drop_index_step(
                "drop-index", f"drop index {self.name} concurrently", ctx.schema, self.name
            )
        ]
