"""The `set_replica_identity` operation.

ALTER TABLE ... REPLICA IDENTITY is a catalog change: no scan, no rewrite, but it takes
ACCESS EXCLUSIVE on the table for that moment (measured on PostgreSQL 15 and 18), under
the plan's lock_timeout and retries. It changes what logical decoding writes for an
UPDATE or DELETE (the old row's key, the whole row, or nothing); neither version's
queries change. One thing breaks them: a publication that publishes the table's UPDATEs
or DELETEs makes PostgreSQL refuse both on a table whose identity names no row, so
``nothing`` (or ``default`` without a primary key) is refused there, naming the
publications. An index must be one PostgreSQL accepts (unique, valid, not partial, no
expression, not deferrable, its columns NOT NULL); a plan may build it earlier.

Under `expand:` the identity as it was is saved in a small function in migrator's
schema, so the rollback puts it back; the contract drops the function. Under `contract:`
the change waits for the old version to be gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from migrator.engine.catalog_tables import (
    identity_index_problem,
    publications_of_changes,
    replica_identity,
)
from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.records import SavedRecord
from migrator.ops.validation import require_table
from migrator.sqltext import ident, short_name
from migrator.strict import Strict


class IndexIdentity(Strict):
    """``identity: {index: NAME}``: the key of a unique index names the row."""

    index: Identifier


Identity = Literal["default", "full", "nothing"] | IndexIdentity


def identity_sql(identity: Identity | str) -> str:
    """The REPLICA IDENTITY clause: ``FULL``, ``USING INDEX "i"``...; a saved
    ``index:NAME`` too."""
    if isinstance(identity, IndexIdentity):
        return f"USING INDEX {ident(identity.index)}"
    if identity.startswith("index:"):
        return f"USING INDEX {ident(identity.removeprefix('index:'))}"
    return identity.upper()


class SetReplicaIdentity(Operation):
    """`set_replica_identity`: default, full, nothing or {index: NAME}."""

    op_name: ClassVar[str] = "set_replica_identity"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand", "contract"})
    table: Identifier
    identity: Identity

    def describe(self) -> str:
        return f"replica identity of {self.table}"

    def _label(self) -> str:
        if isinstance(self.identity, IndexIdentity):
            return f"index {self.identity.index}"
        return self.identity

    def _record(self, ctx: Context) -> SavedRecord:
        """The record of the identity as it was before the expand."""
        return SavedRecord(short_name(ctx.schema, self.table, "replica_identity"))

    def validate_live(self, ctx: Context) -> None:
        where = f"set_replica_identity {self.table}"
        require_table(ctx, where, self.table)
        new_table = self.table in ctx.planned_tables
        if isinstance(self.identity, IndexIdentity):
            index = self.identity.index
            planned = (
                index in ctx.planned_relations and ctx.catalog.index(ctx.schema, index) is None
            )
            if not planned:
                problem = identity_index_problem(ctx.catalog, ctx.schema, self.table, index)
                if problem:
                    raise ValidationFailed(
                        f"{where}: {problem}; a replica identity index is unique, valid, "
                        "not partial, without expressions, not deferrable, over NOT NULL "
                        "columns"
                    )
            return
        if new_table:
            return
        nameless = self.identity == "nothing" or (
            self.identity == "default" and not ctx.catalog.primary_key(ctx.schema, self.table)
        )
        if nameless:
            publications = publications_of_changes(ctx.catalog, ctx.schema, self.table)
            if publications:
                why = "" if self.identity == "nothing" else " (it has no primary key)"
                raise ValidationFailed(
                    f"{where}: {self.identity}{why} names no row, and publication "
                    f"{', '.join(publications)} publishes its updates or deletes: PostgreSQL "
                    "would refuse every UPDATE and DELETE on it"
                )

    def _alter(
        self, ctx: Context, key: str, clause: str, *more: str, rollback: bool = False
    ) -> Step:
        # The rollback's table may be gone already (a failed expand of the plan that
        # creates it), hence IF EXISTS there.
        return step(
            key,
            f"replica identity of {self.table}: {clause.lower()}",
            *more,
            f"ALTER TABLE {'IF EXISTS ' if rollback else ''}{ident(ctx.schema, self.table)} "
            f"REPLICA IDENTITY {clause}",
        )

    def _current(self, ctx: Context) -> str:
        """The live identity as a saved value: ``full``, ``index:NAME``..."""
        if not ctx.catalog.table_exists(ctx.schema, self.table):
            return "default"  # a table the plan creates starts with the default
        kind, index = replica_identity(ctx.catalog, ctx.schema, self.table)
        return f"index:{index}" if kind == "index" else kind

    def expand(self, ctx: Context) -> Sequence[Step]:
        save = self._record(ctx).save_sql(self._current(ctx))
        return [self._alter(ctx, "replica-identity", identity_sql(self.identity), *save)]

    def contract(self, ctx: Context) -> Sequence[Step]:
        # The saved record says which section the operation stands in: the expand made
        # it (its contract only forgets it), or the change is the contract's own.
        if self._record(ctx).exists(ctx):
            return [
                step(
                    "forget",
                    f"drop the saved replica identity of {self.table}",
                    self._record(ctx).forget_sql(),
                )
            ]
        return [self._alter(ctx, "replica-identity", identity_sql(self.identity))]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        before = self._record(ctx).read(ctx)
        if before is None:
            before = self._current(ctx)  # not expanded yet (a rendered downgrade)
        return [
            self._alter(
                ctx,
                "restore-replica-identity",
                identity_sql(before),
                self._record(ctx).forget_sql(),
                rollback=True,
            )
        ]
