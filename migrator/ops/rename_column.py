"""The `rename_column` operation: both names work while both versions run.

A RENAME COLUMN in place breaks the old version at once (LINT rule 19), so:

- expand adds the new column (same type and collation, nullable, no default, the old
  column's column privileges: a role granted ``SELECT (old)`` alone may read the new
  name from the expand on), a trigger that keeps old and new in step both ways (see `migrator.ops.shadow`), and
  copies of the old column's indexes over the new one, built concurrently, so the new
  version's queries by the new name are as fast as the old version's;
- the backfill copies existing rows;
- the contract, once the old version is gone, drops the trigger and the new column and
  renames the old column to the new name, in one short transaction. The two columns
  hold the same values by then, and keeping the old column's storage carries over
  everything PostgreSQL ties to it by attribute number, exactly and without a scan: its
  indexes (and their constraints), default and owned sequence, NOT NULL, CHECKs, foreign
  keys both ways, views, statistics, comment and grants. Copying each to the new column
  instead would need a validated CHECK for NOT NULL, NOT VALID + VALIDATE for every
  constraint, re-pointing every foreign key and re-creating every view.

Rollback drops the trigger, its function and the new column (its index copies go with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.engine.catalog_columns import (
    column_facts,
    column_indexes,
    grants_on,
    types_without_equality,
)
from migrator.engine.steps import BackfillSpec, Doomed, Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import ChangedColumn, Context, Operation, Phase
from migrator.ops.column_swap import grant_sql
from migrator.ops.columns import Identifier
from migrator.ops.shadow import (
    ShadowSync,
    drop_sync_sql,
    shadow_index_steps,
    sync_trigger_step,
)
from migrator.sqltext import ident, short_name


class RenameColumn(Operation):
    """`rename_column`: the old name for the old version, the new one for the new."""

    op_name: ClassVar[str] = "rename_column"
    fills_before_switch: ClassVar[bool] = True
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    from_: Identifier = Field(alias="from")
    to: Identifier

    def describe(self) -> str:
        return f"rename column {self.table}.{self.from_} to {self.to}"

    def column_changes(self) -> Sequence[ChangedColumn]:
        # Both names are kept in step both ways while both versions run.
        return (
            ChangedColumn(
                self.table, self.from_, "rename", f"renamed to {self.to}", "expand", synced=True
            ),
        )

    # -- names -------------------------------------------------------------------------

    def trigger_name(self) -> str:
        """The sync trigger on the table."""
        return short_name(self.from_, self.to, "sync", prefix="_migrator_")

    def function_name(self, ctx: Context) -> str:
        """The trigger function, in migrator's own schema."""
        return ident("migrator", short_name(ctx.schema, self.table, self.from_, self.to, "sync"))

    def index_name(self, index: str) -> str:
        """The copy of an index of the old column, over the new one."""
        return short_name(index, self.to, prefix="_migrator_")

    # -- lifecycle -----------------------------------------------------------------------

    def validate_live(self, ctx: Context) -> None:
        where = f"rename_column {self.table}.{self.from_}"
        cat = ctx.catalog
        if self.from_ == self.to:
            raise ValidationFailed(f"{where}: `from` and `to` are the same name")
        if not cat.table_exists(ctx.schema, self.table):
            raise ValidationFailed(f"{where}: table {ctx.schema}.{self.table} does not exist")
        facts = column_facts(cat, ctx.schema, self.table, self.from_)
        if facts is None:
            raise ValidationFailed(
                f"{where}: column {self.from_} does not exist in {ctx.schema}.{self.table}"
            )
        if cat.column(ctx.schema, self.table, self.to) is not None:
            raise ValidationFailed(
                f"{where}: column {self.to} already exists in {ctx.schema}.{self.table}"
            )
        if facts.relkind == "p":
            raise ValidationFailed(
                f"{where}: {self.table} is partitioned; indexes cannot be built concurrently "
                "on a partitioned table, so this rename is not supported there yet"
            )
        if facts.identity or facts.generated:
            kind = "an identity" if facts.identity else "a generated"
            raise ValidationFailed(
                f"{where}: {self.from_} is {kind} column; a trigger cannot keep a copy of it "
                "in step, so it cannot be renamed while both versions run"
            )

    def expand(self, ctx: Context) -> Sequence[Step]:
        facts = column_facts(ctx.catalog, ctx.schema, self.table, self.from_)
        if facts is None:
            raise ValidationFailed(
                f"rename_column {self.table}.{self.from_}: column {self.from_} does not exist"
            )
        table = ident(ctx.schema, self.table)
        collate = f" COLLATE {facts.collation}" if facts.collation else ""
        # Nullable and without a default: a NULL tells the trigger the writer did not set
        # the new name (see migrator.ops.shadow). The default, NOT NULL and the rest come
        # with the old column's storage in the contract.
        steps = [
            step(
                "add-column",
                f"add {self.table}.{self.to} beside {self.from_}",
                f"ALTER TABLE {table} ADD COLUMN {ident(self.to)} {facts.type}{collate}",
                # A role granted the old column alone (GRANT SELECT (col)) gets the new
                # name too, so the new version may use it; the contract keeps the old
                # column's storage, and its grants with it.
                *grant_sql(grants_on(ctx.catalog, table, self.from_), f"TABLE {table}", self.to),
            )
        ]
        ctx.notes.append(
            f"rename_column {self.table}.{self.from_}: {self.to} is NULL on existing rows "
            "until the backfill copies them; the new version reads it, so run the backfill "
            "before the switch (`migrator switch` waits for it; `migrator release` runs it "
            "first)"
        )
        types = {c.name: c.type for c in ctx.catalog.columns(ctx.schema, self.table)}
        function = self.function_name(ctx)
        steps.append(
            sync_trigger_step(
                "sync-trigger",
                f"trigger keeping {self.table}.{self.from_} and {self.to} in step",
                ctx.schema,
                self.table,
                self.trigger_name(),
                function,
                ShadowSync(
                    column=self.from_,
                    shadow=self.to,
                    shadow_type=facts.type,
                    up=ident(self.from_),
                    down=ident(self.from_),
                    column_types=types,
                    no_equality=types_without_equality(ctx.catalog, [*types.values(), facts.type]),
                ),
            )
        )
        steps += shadow_index_steps(
            "index",
            ctx.schema,
            self.table,
            column_indexes(ctx.catalog, facts),
            {self.from_: self.to},
            self.index_name,
        )
        return steps

    def backfills(self, ctx: Context) -> Sequence[BackfillSpec]:
        old, new = ident(self.from_), ident(self.to)
        needs = f"{new} IS DISTINCT FROM {old}"
        facts = column_facts(ctx.catalog, ctx.schema, self.table, self.from_)
        if facts is not None and types_without_equality(ctx.catalog, [facts.type]):
            needs = f"{new}::text IS DISTINCT FROM {old}::text"  # json and the like
        return (
            BackfillSpec(
                key="backfill",
                schema=ctx.schema,
                table=self.table,
                set={self.to: old},
                needs=needs,
                description=f"copy {self.table}.{self.from_} to {self.to}",
            ),
        )

    def contract(self, ctx: Context) -> Sequence[Step]:
        table = ident(ctx.schema, self.table)
        return [
            step(
                "swap",
                f"{self.table}.{self.from_} becomes {self.to}; the copy and the trigger go",
                *drop_sync_sql(
                    ctx.schema, self.table, self.trigger_name(), self.function_name(ctx)
                ),
                f"ALTER TABLE {table} DROP COLUMN {ident(self.to)}",
                f"ALTER TABLE {table} RENAME COLUMN {ident(self.from_)} TO {ident(self.to)}",
            )
        ]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        return [
            step(
                "drop-column",
                f"drop {self.table}.{self.to}, its trigger and index copies",
                *drop_sync_sql(
                    ctx.schema, self.table, self.trigger_name(), self.function_name(ctx)
                ),
                f"ALTER TABLE {ident(ctx.schema, self.table)} DROP COLUMN IF EXISTS "
                f"{ident(self.to)}",
            )
        ]

    def doomed(self) -> Sequence[Doomed]:
        """The old name goes with the contract; the old version must have stopped using it."""
        return (Doomed(self.table, self.from_),)
