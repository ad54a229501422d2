"""The `create_index` operation.

CREATE INDEX CONCURRENTLY in an autocommit block: it takes SHARE UPDATE EXCLUSIVE, so
reads and writes go on while it builds (a plain CREATE INDEX holds SHARE, blocking
writes for the whole build). A failed concurrent build leaves an INVALID index behind;
the block drops it and builds again, so a rerun (or a retry after a lock timeout)
never skips over it. The rollback is DROP INDEX CONCURRENTLY.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.safe import (
    build_index_step,
    drop_index_step,
    index_key,
    is_ours,
    unmark_index_sql,
)
from migrator.ops.validation import (
    refuse_duplicates,
    require_columns,
    require_expression,
    require_table,
)


class CreateIndex(Operation):
    """`create_index`: an index built concurrently; ``columns`` may hold expressions."""

    op_name: ClassVar[str] = "create_index"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    name: Identifier
    columns: list[str] = Field(min_length=1)
    unique: bool = False
    method: Literal["btree", "hash", "gist", "spgist", "gin", "brin"] = "btree"
    where: str | None = None
    include: list[Identifier] = Field(default_factory=list)

    def describe(self) -> str:
        return f"create index {self.name} on {self.table}"

    def _keys(self, ctx: Context) -> list[str]:
        names = ctx.column_names(self.table)
        return [index_key(c, names) for c in self.columns]

    def _plain_columns(self, ctx: Context) -> list[str] | None:
        """The key columns when all of them are plain columns of the table."""
        names = ctx.column_names(self.table)
        return list(self.columns) if all(c in names for c in self.columns) else None

    def validate_live(self, ctx: Context) -> None:
        where = f"create_index {self.name}"
        require_table(ctx, where, self.table)
        names = ctx.column_names(self.table)
        for key in self.columns:
            if key in names:
                continue
            if key.isidentifier():
                raise ValidationFailed(f"{where}: {ctx.schema}.{self.table} has no column {key}")
            require_expression(ctx, f"{where}: key", self.table, key)
        require_columns(ctx, where, self.table, self.include)
        if self.where is not None:
            require_expression(ctx, f"{where}: where", self.table, self.where, "boolean")
        existing = ctx.catalog.index(ctx.schema, self.name)
        if existing is not None and not (
            existing.table == self.table
            and (not existing.valid or is_ours(existing, self.table, ctx.release))
        ):
            raise ValidationFailed(
                f"{where}: an index named {self.name} already exists on {existing.table}"
            )
        # An INVALID one on the table is a failed earlier build: dropped and built again.
        # A valid one marked as this release's is an earlier build not yet recorded: kept.
        if existing is None and ctx.relation_taken(self.name):
            raise ValidationFailed(
                f"{where}: a relation named {ctx.schema}.{self.name} already exists"
            )
        plain = self._plain_columns(ctx)
        if self.unique and plain is not None and self.where is None:
            refuse_duplicates(ctx, where, self.table, plain)
        ctx.planned_relations.add(self.name)

    def expand(self, ctx: Context) -> Sequence[Step]:
        existing = ctx.catalog.index(ctx.schema, self.name)
        reuse = is_ours(existing, self.table, ctx.release)
        if existing is not None and not existing.valid:
            ctx.notes.append(
                f"create_index {self.name}: an INVALID index of that name, left by a failed "
                "build, is dropped and built again"
            )
        return [
            build_index_step(
                "create-index",
                f"index {self.name} on {self.table}, built concurrently",
                ctx.schema,
                self.table,
                self.name,
                self._keys(ctx),
                release=ctx.release,
                reuse=reuse,
                unique=self.unique,
                method=self.method,
                where=self.where,
                include=self.include,
            ),
            step(
                "unmark-index",
                f"index {self.name} recorded: clear its build mark",
                unmark_index_sql(ctx.schema, self.name),
            ),
        ]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        return [
            drop_index_step(
                "drop-index", f"drop index {self.name} concurrently", ctx.schema, self.name
            )
        ]
