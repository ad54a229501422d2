"""The `create_index` operation.

CREATE INDEX CONCURRENTLY in an autocommit block: it takes SHARE UPDATE EXCLUSIVE, so
reads and writes go on while it builds (a plain CREATE INDEX holds SHARE, blocking
writes for the whole build). A failed concurrent build leaves an INVALID index behind;
the block drops it and builds again, so a rerun (or a retry after a lock timeout)
never skips over it. The rollback is DROP INDEX CONCURRENTLY.

On a partitioned table the index is built partition by partition (ops/partitioned.py):
ON ONLY the parent, CONCURRENTLY on each partition, each attached; its rollback is the
plain DROP INDEX PostgreSQL requires for a partitioned index (catalog only, no scan).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from migrator.engine.catalog_partitions import (
    is_partitioned,
)
from migrator.engine.catalog_tables import index_build_error
from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.partitioned import (
    drop_partitioned_index_step,
    partition_index_clashes,
    partition_key_missing,
    partitioned_index_steps,
    refuse_unique_without_partition_key,
)
from migrator.ops.safe import (
    IndexShape,
    StorageValue,
    build_index_step,
    drop_index_step,
    index_key,
    is_ours,
    unmark_index_sql,
)
from migrator.ops.validation import (
    refuse_duplicates,
    refuse_index_name_taken,
    require_columns,
    require_expression,
    require_table,
)
from migrator.sqltext import ident
from migrator.strict import Strict


class IndexColumn(Strict):
    """A key with options: ``{column: email, opclass: text_pattern_ops, order: desc}``."""

    column: str = Field(description="a column of the table, or an SQL expression")
    opclass: str | None = Field(
        default=None, description="operator class, e.g. text_pattern_ops, gin_trgm_ops"
    )
    order: Literal["asc", "desc"] | None = None
    nulls: Literal["first", "last"] | None = None


class CreateIndex(Operation):
    """`create_index`: an index built concurrently; ``columns`` may hold expressions."""

    op_name: ClassVar[str] = "create_index"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    name: Identifier
    columns: list[str | IndexColumn] = Field(min_length=1)
    unique: bool = False
    method: Literal["btree", "hash", "gist", "spgist", "gin", "brin"] = "btree"
    where: str | None = None
    include: list[Identifier] = Field(default_factory=list)
    storage_parameters: dict[str, StorageValue] = Field(
        default_factory=dict, description="WITH (...): fillfactor, deduplicate_items, ..."
    )
    nulls_not_distinct: bool = Field(
        default=False, description="a unique index where NULLs clash (PostgreSQL 15+)"
    )

    def describe(self) -> str:
        return f"create index {self.name} on {self.table}"

    def _key_columns(self) -> list[str]:
        """The columns or expressions of the keys, without their options."""
        return [c.column if isinstance(c, IndexColumn) else c for c in self.columns]

    def _shape(self, ctx: Context) -> IndexShape:
        """The index as CREATE INDEX spells it, on this table's columns."""
        return IndexShape(
            tuple(self._keys(ctx)),
            unique=self.unique,
            method=self.method,
            where=self.where,
            include=tuple(self.include),
            nulls_not_distinct=self.nulls_not_distinct,
            storage=tuple(self.storage_parameters.items()),
        )

    def _keys(self, ctx: Context) -> list[str]:
        names = ctx.column_names(self.table)
        keys = []
        for c in self.columns:
            if not isinstance(c, IndexColumn):
                keys.append(index_key(c, names))
                continue
            sql = index_key(c.column, names)
            if c.opclass:
                sql += " " + ident(*c.opclass.split("."))
            if c.order:
                sql += f" {c.order.upper()}"
            if c.nulls:
                sql += f" NULLS {c.nulls.upper()}"
            keys.append(sql)
        return keys

    def _plain_columns(self, ctx: Context) -> list[str] | None:
        """The key columns when all of them are plain columns of the table."""
        names = ctx.column_names(self.table)
        keys = self._key_columns()
        return keys if all(c in names for c in keys) else None

    def validate_live(self, ctx: Context) -> None:
        where = f"create_index {self.name}"
        require_table(ctx, where, self.table)
        names = ctx.column_names(self.table)
        if self.nulls_not_distinct:
            if not self.unique:
                raise ValidationFailed(f"{where}: nulls_not_distinct goes with unique: true")
            if ctx.server_version < 150000:
                raise ValidationFailed(
                    f"{where}: nulls_not_distinct needs PostgreSQL 15 or later; this server is "
                    f"{ctx.server_version // 10000}"
                )
        for key in self._key_columns():
            if key in names:
                continue
            if key.isidentifier():
                raise ValidationFailed(f"{where}: {ctx.schema}.{self.table} has no column {key}")
            require_expression(ctx, f"{where}: key", self.table, key)
        require_columns(ctx, where, self.table, self.include)
        if self.where is not None:
            require_expression(ctx, f"{where}: where", self.table, self.where, "boolean")
        existing = refuse_index_name_taken(ctx, where, self.table, self.name)
        extra = ctx.planned_column_types.get(self.table, {})
        if self.table not in ctx.planned_tables and not any(
            ctx.type_planned(t) for t in extra.values()
        ):
            # The index built once, on an empty copy of the table (with the columns earlier
            # operations add), in a savepoint rolled back: the method, operator classes and
            # storage parameters as PostgreSQL takes them.
            problem = index_build_error(
                ctx.catalog,
                ctx.schema,
                self.table,
                lambda s, t: self._probe_sql(ctx, s, t),
                extra=extra,
            )
            if problem:
                raise ValidationFailed(f"{where}: PostgreSQL refuses the index: {problem}")
        if self.table not in ctx.planned_tables and is_partitioned(
            ctx.catalog, ctx.schema, self.table
        ):
            self._validate_partitioned(ctx, where, existing is not None)
        plain = self._plain_columns(ctx)
        if self.unique and plain is not None and self.where is None:
            refuse_duplicates(ctx, where, self.table, plain)
            if self.nulls_not_distinct and len(plain) == 1 and self.table not in ctx.planned_tables:
                nulls = ctx.catalog.null_count(ctx.schema, self.table, plain[0])
                if nulls > 1:
                    raise ValidationFailed(
                        f"{where}: {nulls} rows of {self.table} hold NULL in {plain[0]}, which "
                        "clash under nulls_not_distinct; remove the duplicates first"
                    )
        ctx.planned_relations.add(self.name)

    def _probe_sql(self, ctx: Context, schema: str, table: str) -> str:
        """The same index on another table, built at once (`index_build_error`'s copy)."""
        return self._shape(ctx).create_sql(
            schema, table, "_migrator_probe_index", concurrently=False
        )

    def _validate_partitioned(self, ctx: Context, where: str, exists: bool) -> None:
        if exists:
            raise ValidationFailed(
                f"{where}: an index named {self.name} already exists on {self.table}"
            )
        taken = partition_index_clashes(ctx, self.table, self.name)
        if taken:
            raise ValidationFailed(
                f"{where}: the index of a partition would be named {taken[0]}, "
                "which is taken; choose another index name"
            )
        if self.unique:
            missing = partition_key_missing(ctx, self.table, self._plain_columns(ctx) or [])
            refuse_unique_without_partition_key(where, "a unique index", self.table, missing)

    def _partitioned(self, ctx: Context) -> bool:
        return ctx.catalog.relation_kind(ctx.schema, self.table) == "p"

    def expand(self, ctx: Context) -> Sequence[Step]:
        if self._partitioned(ctx):
            return partitioned_index_steps(
                ctx, "create-index", self.table, self.name, self._shape(ctx)
            )
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
                self._shape(ctx),
                release=ctx.release,
                reuse=reuse,
            ),
            step(
                "unmark-index",
                f"index {self.name} recorded: clear its build mark",
                unmark_index_sql(ctx.schema, self.name),
            ),
        ]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        if self._partitioned(ctx):
            return [drop_partitioned_index_step("drop-index", ctx.schema, self.name)]
        return [
            drop_index_step(
                "drop-index", f"drop index {self.name} concurrently", ctx.schema, self.name
            )
        ]
