"""The `rename_table` operation.

The expand renames the table and, in the same short transaction, creates a view under
the old name: ``SELECT *`` from one table is automatically updatable, so the old
version's reads and writes (INSERT, UPDATE, DELETE, RETURNING, column defaults) go on
through it while the new version uses the new name. Only the renamed table is under
ACCESS EXCLUSIVE, and only for the catalog change. The contract drops the view; the
rollback drops it and renames the table back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.engine.steps import Doomed, Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.validation import refuse_dependants, require_table
from migrator.sqltext import dollar_quoted, ident, literal

COMPAT_VIEW_MARK = "migrator: the old name of"


class RenameTable(Operation):
    """`rename_table`: the new name for the new version, a view under the old one."""

    op_name: ClassVar[str] = "rename_table"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    from_: Identifier = Field(alias="from")
    to: Identifier

    def describe(self) -> str:
        return f"rename table {self.from_} to {self.to}"

    def validate_live(self, ctx: Context) -> None:
        where = f"rename_table {self.from_} -> {self.to}"
        if self.from_ == self.to:
            raise ValidationFailed(f"{where}: from and to are the same name")
        if self.from_ in ctx.planned_tables:
            raise ValidationFailed(
                f"{where}: {self.from_} is created by this plan; create it under its final name"
            )
        require_table(ctx, where, self.from_)
        if ctx.relation_taken(self.to):
            raise ValidationFailed(
                f"{where}: a table, view, index or sequence named {ctx.schema}.{self.to} "
                "already exists"
            )
        if self.to in ctx.planned_types or ctx.catalog.type_kind(ctx.schema, self.to):
            raise ValidationFailed(f"{where}: a type named {ctx.schema}.{self.to} already exists")
        ctx.planned_tables[self.to] = ctx.column_names(self.from_)
        ctx.planned_relations.add(self.from_)

    def expand(self, ctx: Context) -> Sequence[Step]:
        old = ident(ctx.schema, self.from_)
        return [
            step(
                "rename-table",
                f"rename {self.from_} to {self.to}, view {self.from_} for the old version",
                f"ALTER TABLE {old} RENAME TO {ident(self.to)}",
                f"CREATE VIEW {old} AS SELECT * FROM {ident(ctx.schema, self.to)}",
                # Marks the view as migrator's own, so a contract drop on the renamed
                # table is not refused for it (this contract drops the view first).
                f"COMMENT ON VIEW {old} IS "
                + literal(f"{COMPAT_VIEW_MARK} {self.to} until the contract of {ctx.release}"),
            )
        ]

    def contract(self, ctx: Context) -> Sequence[Step]:
        # Scheduled at `complete`: a view someone built on the old name since the expand
        # would make DROP VIEW fail half-way through the contract; name it now instead.
        if ctx.catalog.relation_kind(ctx.schema, self.from_) == "v":
            refuse_dependants(
                f"rename_table {self.from_} -> {self.to}: contract",
                f"view {self.from_} (the old name, dropped by the contract)",
                ctx.catalog.dependants(ctx.schema, self.from_),
            )
        return [
            step(
                "drop-view",
                f"drop the view {self.from_} the old version used",
                f"DROP VIEW IF EXISTS {ident(ctx.schema, self.from_)}",
            )
        ]

    def doomed(self) -> Sequence[Doomed]:
        """The old name (the view) goes in the contract: `contract` waits until no one reads it."""
        return (Doomed(self.from_),)

    def rollback(self, ctx: Context) -> Sequence[Step]:
        # One static statement that checks the catalog itself, so the same SQL is right
        # whether or not the expand ran (a failed expand, or a rendered downgrade).
        old = ident(ctx.schema, self.from_)
        new = ident(ctx.schema, self.to)
        undo = "DO " + dollar_quoted(
            "\nBEGIN\n"
            "  IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            f" WHERE n.nspname = {literal(ctx.schema)} AND c.relname = {literal(self.from_)}"
            " AND c.relkind = 'v')\n"
            f"     AND to_regclass({literal(new)}) IS NOT NULL THEN\n"
            f"    DROP VIEW {old};\n"
            f"    ALTER TABLE {new} RENAME TO {ident(self.from_)};\n"
            "  END IF;\nEND\n"
        )
        return [
            step(
                "rename-back",
                f"drop the view {self.from_}, rename {self.to} back to {self.from_}",
                undo,
            )
        ]
