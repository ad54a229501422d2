"""The `add_foreign_key` operation.

The expand adds the foreign key NOT VALID: new and changed rows are checked from then
on, existing rows are not scanned, and the locks (SHARE ROW EXCLUSIVE on both tables)
are held only for the catalog change. The contract validates it in its own
transaction, which scans under SHARE UPDATE EXCLUSIVE (reads and writes go on) once
the backfills had their chance to fix the rows. The rollback drops it.

On a partitioned table, rows that break the key are counted and refused before
anything runs. PostgreSQL 18 adds it NOT VALID there as above; before 18 it cannot, so
the key goes on each leaf partition NOT VALID, is validated there, and is then added to
the table, which attaches the partitions' keys without a scan (ops/partitioned.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.engine.catalog_partitions import foreign_key_violations, is_partitioned
from migrator.engine.steps import Step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import FkOptions, Identifier, TableReference
from migrator.ops.partitioned import (
    drop_per_partition_steps,
    foreign_key_per_partition,
    foreign_key_steps,
    refuse_partition_constraint_clash,
)
from migrator.ops.safe import add_foreign_key_step, drop_foreign_key_step, validate_step
from migrator.ops.validation import refuse_constraint_clash, require_columns, require_table
from migrator.words import count


class AddForeignKey(Operation, FkOptions):
    """`add_foreign_key`: NOT VALID now, VALIDATE in the contract; the options of
    `FkOptions` (on_delete, on_update, match, deferrable, initially_deferred)."""

    op_name: ClassVar[str] = "add_foreign_key"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    name: Identifier
    columns: list[Identifier] = Field(min_length=1)
    references: TableReference

    def describe(self) -> str:
        return f"foreign key {self.name} on {self.table}"

    def validate_live(self, ctx: Context) -> None:
        where = f"add_foreign_key {self.name}"
        ref = self.references
        require_table(ctx, where, self.table)
        require_columns(ctx, where, self.table, self.columns)
        require_table(ctx, f"{where}: references", ref.table)
        require_columns(ctx, f"{where}: references", ref.table, ref.columns)
        if len(ref.columns) != len(self.columns):
            raise ValidationFailed(
                f"{where}: {len(self.columns)} columns reference {len(ref.columns)} columns"
            )
        if ref.table not in ctx.planned_tables and not ctx.catalog.has_unique_key(
            ctx.schema, ref.table, ref.columns
        ):
            raise ValidationFailed(
                f"{where}: {ref.table} ({', '.join(ref.columns)}) is not a primary key or "
                "unique, so it cannot be referenced"
            )
        refuse_constraint_clash(ctx, where, self.table, self.name)
        if self.table in ctx.planned_tables or not is_partitioned(
            ctx.catalog, ctx.schema, self.table
        ):
            return
        refuse_partition_constraint_clash(ctx, where, self.table, self.name)
        if set(self.columns) & set(ctx.planned_columns.get(self.table, [])):
            return  # a column the plan adds holds no values yet
        bad = foreign_key_violations(
            ctx.catalog,
            ctx.schema,
            self.table,
            self.columns,
            ref.table,
            ref.columns,
            full=self.match == "full",
        )
        if bad:
            raise ValidationFailed(
                f"{where}: {count(bad, 'row')} of partitioned table {self.table} "
                f"break{'s' if bad == 1 else ''} the key ({', '.join(self.columns)} not in "
                f"{ref.table}); fix or delete them first"
            )

    def _add(
        self, ctx: Context, schema: str, table: str, key: str, valid: bool, description: str
    ) -> Step:
        return add_foreign_key_step(
            key,
            schema,
            table,
            self.name,
            self.columns,
            self.references.table,
            self.references.columns,
            self,
            catalog=ctx.catalog,
            not_valid=not valid,
            description=description,
            ref_schema=ctx.schema,
        )

    def expand(self, ctx: Context) -> Sequence[Step]:
        return foreign_key_steps(
            ctx,
            "add-foreign-key",
            self.table,
            self.name,
            lambda schema, table, key, valid, what: self._add(ctx, schema, table, key, valid, what),
        )

    def contract(self, ctx: Context) -> Sequence[Step]:
        if foreign_key_per_partition(ctx, self.table):
            return []  # validated partition by partition in the expand
        return [validate_step("validate-foreign-key", ctx.schema, self.table, self.name)]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        if foreign_key_per_partition(ctx, self.table):
            return drop_per_partition_steps(
                ctx, "drop-foreign-key", self.table, self.name, self.references.table
            )
        exists = ctx.catalog.constraint_exists(ctx.schema, self.table, self.name)
        return [
            drop_foreign_key_step(
                "drop-foreign-key",
                ctx.schema,
                self.table,
                self.name,
                (ctx.schema, self.references.table) if exists else None,
                catalog=ctx.catalog,
            )
        ]
