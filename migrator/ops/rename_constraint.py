"""The `rename_constraint` operation.

ALTER TABLE ... RENAME CONSTRAINT is a catalog change: no scan, ACCESS EXCLUSIVE on the
table only for that moment (with the plan's lock_timeout and retries). A primary key,
unique or exclusion constraint takes its index's name with it, so the new name must be
free among the schema's relations too. Queries rarely name a constraint, but some do
(``ON CONFLICT ON CONSTRAINT``, error handling matching its name): under `expand:` the
new name holds from the expand on and the rollback renames it back; under `contract:`
the old name holds until the old version is gone. `migrator check` finds a query set's
``ON CONFLICT ON CONSTRAINT`` that a phase's schema breaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.validation import refuse_constraint_clash, require_table
from migrator.sqltext import dollar_quoted, ident, literal


class RenameConstraint(Operation):
    """`rename_constraint`: one catalog change; the index of a key constraint follows."""

    op_name: ClassVar[str] = "rename_constraint"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand", "contract"})
    table: Identifier
    from_: Identifier = Field(alias="from")
    to: Identifier

    def describe(self) -> str:
        return f"rename constraint {self.table}.{self.from_} to {self.to}"

    def validate_live(self, ctx: Context) -> None:
        where = f"rename_constraint {self.table}.{self.from_} -> {self.to}"
        if self.from_ == self.to:
            raise ValidationFailed(f"{where}: from and to are the same name")
        if self.table in ctx.planned_tables:
            raise ValidationFailed(
                f"{where}: {self.table} is created by this plan; name the constraint there"
            )
        require_table(ctx, where, self.table)
        found = ctx.catalog.constraint(ctx.schema, self.table, self.from_)
        if found is None:
            raise ValidationFailed(f"{where}: {self.table} has no constraint named {self.from_}")
        refuse_constraint_clash(ctx, where, self.table, self.to)
        if found.index is not None and ctx.relation_taken(self.to):
            # The index behind a key constraint is renamed with it.
            raise ValidationFailed(
                f"{where}: the constraint's index would be renamed {self.to}, and a relation "
                f"named {ctx.schema}.{self.to} already exists"
            )
        if found.index is not None:
            ctx.planned_relations.add(self.to)

    def expand(self, ctx: Context) -> Sequence[Step]:
        return [self._step(ctx, "rename-constraint", self.from_, self.to)]

    def contract(self, ctx: Context) -> Sequence[Step]:
        # An operation does not know which section it stands in; the catalog does: under
        # `expand:` the rename is done by now, under `contract:` it is still to do.
        if ctx.catalog.constraint(ctx.schema, self.table, self.from_) is None:
            return []
        return [self._step(ctx, "rename-constraint", self.from_, self.to)]

    def _step(self, ctx: Context, key: str, old: str, new: str) -> Step:
        return step(
            key,
            f"rename constraint {old} on {self.table} to {new}",
            f"ALTER TABLE {ident(ctx.schema, self.table)} RENAME CONSTRAINT {ident(old)} "
            f"TO {ident(new)}",
        )

    def rollback(self, ctx: Context) -> Sequence[Step]:
        # One statement that checks the catalog itself, so the same SQL is right whether
        # or not the expand's rename ran (a failed expand, a rendered downgrade).
        table = ident(ctx.schema, self.table)
        undo = "DO " + dollar_quoted(
            "\nBEGIN\n"
            "  IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = "
            f"to_regclass({literal(table)}) AND conname = {literal(self.to)})\n"
            "     AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = "
            f"to_regclass({literal(table)}) AND conname = {literal(self.from_)}) THEN\n"
            f"    ALTER TABLE {table} RENAME CONSTRAINT {ident(self.to)} "
            f"TO {ident(self.from_)};\n"
            "  END IF;\nEND\n"
        )
        return [
            step(
                "rename-back",
                f"rename constraint {self.to} on {self.table} back to {self.from_}",
                undo,
            )
        ]
