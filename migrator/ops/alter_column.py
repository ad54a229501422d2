"""The `alter_column` operation: change a column's type, nullability, default or constraints.

A type change never rewrites the table under ACCESS EXCLUSIVE (LINT rule 16):

- changes that rewrite nothing (`migrator.pgtypes.rewrites`: varchar(n) to text, a wider
  varchar, numeric or timestamp precision, pg_cast's binary casts) are done in place by
  the expand: a catalog-only ALTER TYPE; views over the column are re-created in the
  same transaction;
- any other change gets a shadow column of the new type, kept in step both ways by a
  trigger with the plan's ``up`` (old to new) and ``down`` (new to old; its bare column
  name means the new value), both defaulting to casts; copies of the column's indexes
  are built concurrently over the shadow and a backfill fills existing rows. The
  contract first re-creates every constraint over the shadow, NOT VALID and then
  validated (CHECKs, foreign keys both ways, a CHECK for NOT NULL), then swaps in one
  short transaction: the old column is dropped, the shadow renamed in, and the default,
  NOT NULL, primary key / unique constraints (USING INDEX), index, constraint and view
  names put back as they were (ops/column_swap.py). The column moves to the end of the
  table. The shadow column's expand, backfill and rollback are ops/alter_column_shadow.py.

The rest, without a type change:

- ``nullable: false``: SET NOT NULL in the contract, through a validated CHECK (rule 14);
- ``nullable: true``: DROP NOT NULL in the expand (the new version may write NULLs),
  with a warning in the notes: the old version may now read NULLs (rule 15). Decided so
  because refusing would leave no way to relax a column, and the catalog change itself is
  instant; the warning is the linter's to escalate;
- ``default``: SET DEFAULT in the expand (no rewrite; it applies to new rows only);
  ``default: null`` drops it in the contract (the old version may insert relying on it);
- ``check``, ``unique``, ``references`` tighten, so they wait for the contract (from the
  moment it is added a constraint is enforced on new writes, and the old version's must
  not start failing): a CHECK named ``<table>_<column>_check`` added NOT VALID and
  validated in its own transaction; a unique index built concurrently, then ADD
  CONSTRAINT ... USING INDEX; a foreign key added NOT VALID and validated separately.
  Their names and the data are checked when the plan is validated (duplicates are
  named), so a contract failing half-way is unlikely. With a shadow column (a type
  change, or ``up`` given) they are added over the shadow before the swap, so ``type``
  combines with all of them (ops/alter_constraints.py); what PostgreSQL cannot build on
  the new type (a unique without a btree class, a foreign key between incompatible key
  types, a check that does not plan over it) is refused when the plan is validated.

What the column was before the expand (type, default, NOT NULL) is saved in a small
function in migrator's schema, so the rollback puts it back exactly even though the
catalog no longer shows it; the contract and the rollback drop the function.

What is checked when the plan is validated is ops/alter_column_validation.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field, PrivateAttr

# SQLAlchemy is imported in the methods that read the catalog: a plan loads without it.
from migrator.engine.catalog_columns import (
    ColumnFacts,
    IndexFacts,
    column_facts,
    column_indexes,
    dependent_views,
)
from migrator.engine.steps import BackfillSpec, Step, step
from migrator.errors import ValidationFailed
from migrator.ops.alter_column_shadow import drop_shadow_step, shadow_backfill, shadow_steps
from migrator.ops.alter_column_validation import validate
from migrator.ops.alter_constraints import Tightening
from migrator.ops.base import ChangedColumn, Context, Operation, Phase
from migrator.ops.column_swap import swap_steps
from migrator.ops.columns import ColumnReference, Identifier, NamedCheck, NamedUnique
from migrator.ops.expressions import default_sql
from migrator.ops.records import SavedRecord
from migrator.ops.safe import not_null_steps
from migrator.ops.shadow import restore_views_sql, save_and_drop_views_sql
from migrator.pgtypes import rewrites
from migrator.sqltext import ident, literal, short_name


class AlterColumn(Operation):
    """`alter_column`: one column changed while both versions run."""

    op_name: ClassVar[str] = "alter_column"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    column: Identifier
    type: str | None = None
    up: str | None = None
    down: str | None = None
    nullable: bool | None = None
    default: str | int | float | bool | None = None
    check: str | NamedCheck | None = None
    unique: bool | NamedUnique | None = None
    references: ColumnReference | None = None
    comment: str | None = Field(
        default=None, description="COMMENT ON the column; null removes the comment"
    )
    # Set by drop_constraint with up/down (never a plan key): the constraint over the
    # column that the shadow does not get, so the swap leaves it behind.
    _dropping: str | None = PrivateAttr(default=None)

    def describe(self) -> str:
        return f"alter column {self.table}.{self.column}"

    def drops_default(self) -> bool:
        """True for an explicit ``default: null``: the column's default goes."""
        return "default" in self.model_fields_set and self.default is None

    def sets_comment(self) -> bool:
        """True when the plan sets or (with an explicit null) removes the comment."""
        return "comment" in self.model_fields_set

    def dropping(self, constraint: str) -> AlterColumn:
        """This change, leaving ``constraint`` behind at the swap (drop_constraint's form)."""
        self._dropping = constraint
        return self

    def column_changes(self) -> Sequence[ChangedColumn]:
        if self.type is None and not self.rewrites_data():
            return ()
        # A shadow column kept in step both ways (up/down default to casts, or to the
        # value itself without a type change), or a change that rewrites nothing done in
        # place: the old version's writes are carried.
        detail = (
            f"retyped to {self.type}"
            if self.type is not None
            else "rewritten by up for its new constraints"
        )
        return (ChangedColumn(self.table, self.column, "retype", detail, "expand", synced=True),)

    def tightening(self) -> Tightening:
        """The constraints this change adds (check, unique, references)."""
        return Tightening(self.table, self.column, self.check, self.unique, self.references)

    def tightens(self) -> bool:
        """True when the change adds NOT NULL, a check, a unique or a foreign key."""
        return self.nullable is False or any(
            v is not None for v in (self.check, self.unique, self.references)
        )

    def rewrites_data(self) -> bool:
        """True for the constraint form with ``up`` / ``down`` and no type change: a
        shadow column of the same type, rewritten by ``up`` (ops/alter_constraints.py)."""
        return self.type is None and (self.up is not None or self.down is not None)

    # -- names ---------------------------------------------------------------------------

    def shadow_name(self) -> str:
        """The shadow column of the new type (the new version may read it by this name)."""
        return short_name(self.column, prefix="_migrator_new_")

    def trigger_name(self) -> str:
        """The sync trigger on the table."""
        return short_name(self.column, "retype", prefix="_migrator_")

    def function_name(self, ctx: Context) -> str:
        """The trigger function, in migrator's own schema."""
        return ident("migrator", short_name(ctx.schema, self.table, self.column, "retype"))

    def record(self, ctx: Context) -> SavedRecord:
        """The record of the column as it was before the expand."""
        return SavedRecord(short_name(ctx.schema, self.table, self.column, "before"))

    def index_name(self, index: str) -> str:
        """The copy of an index over the shadow column."""
        return short_name(index, "new", prefix="_migrator_")

    def constraint_name(self, name: str) -> str:
        """A constraint re-created over the shadow, until the swap gives it its name back."""
        return short_name(name, "new", prefix="_migrator_")

    def check_name(self) -> str:
        """The CHECK of ``check:``."""
        return self.tightening().check_name()

    def fk_name(self) -> str:
        """The foreign key of ``references:``."""
        return self.tightening().fk_name()

    def unique_name(self) -> str:
        """The UNIQUE constraint of ``unique: true`` (and its index)."""
        return self.tightening().unique_name()

    # -- what kind of change --------------------------------------------------------------

    def facts(self, ctx: Context) -> ColumnFacts:
        """The live column; ValidationFailed when the table has no such column."""
        facts = column_facts(ctx.catalog, ctx.schema, self.table, self.column)
        if facts is None:
            raise ValidationFailed(
                f"{self.where()}: column {self.column} does not exist in {ctx.schema}.{self.table}"
            )
        return facts

    def where(self) -> str:
        """How messages name this operation."""
        return f"alter_column {self.table}.{self.column}"

    def left_behind(self) -> str | None:
        """The constraint the swap leaves behind (drop_constraint's form), if any."""
        return self._dropping

    def expanded(self, ctx: Context) -> bool:
        """True once the expand saved the column (the catalog shows the expanded state)."""
        return self.record(ctx).exists(ctx)

    def column_before(self, ctx: Context, facts: ColumnFacts) -> dict[str, object]:
        """The column as it was before the expand: the saved record, or the live column."""
        raw = self.record(ctx).read(ctx)
        return _record(facts) if raw is None else dict(json.loads(raw))

    def shadow_type(self, facts: ColumnFacts) -> str:
        """The shadow's type: the new one, or the column's own for the constraint form."""
        return self.type if self.type is not None else facts.type

    def changes_type(self, facts: ColumnFacts) -> bool:
        """True when ``type`` differs from the live column's."""
        return self.type is not None and self.type.strip() != facts.type

    def in_place(self, ctx: Context, facts: ColumnFacts) -> bool:
        """True when the type change goes without a shadow column (``type`` is given)."""
        assert self.type is not None
        # Both types as the server spells them (a user type by its visible name), so
        # pgtypes judges the change; where it cannot know (domains, user types,
        # timestamp <-> timestamptz) the shadow column is the safe way.
        if facts.generated:
            # A generated column cannot be shadowed (a plain column cannot become one
            # later): PostgreSQL retypes it in place, recomputing it where the change
            # rewrites (validation says so).
            return True
        if (self.up is not None or self.down is not None) and self.tightens():
            # `up` rewrites the values the new constraints forbid: through the shadow
            # column, even where the type change alone would rewrite nothing.
            return False
        spelled = ctx.catalog.type_spelling(self.type)
        return spelled is not None and rewrites(facts.type, spelled) is False

    def retypes_in_place(self, ctx: Context) -> bool:
        """True when the type change is a catalog-only ALTER TYPE (no shadow column)."""
        return self.type is not None and self.in_place(ctx, self.facts(ctx))

    def shadowed(self, ctx: Context) -> bool:
        """True when the expand made (or makes) a shadow column."""
        if ctx.catalog.column(ctx.schema, self.table, self.shadow_name()) is not None:
            return True
        if self.rewrites_data():
            return True
        facts = self.facts(ctx)
        return self.changes_type(facts) and not self.in_place(ctx, facts)

    def up_sql(self) -> str:
        """The shadow's value from the column's: ``up``, or a cast to the new type."""
        if self.up is not None:
            return self.up
        return f"{ident(self.column)}::{self.type}" if self.type is not None else ident(self.column)

    def down_sql(self, old_type: str) -> str:
        """The column's value from the shadow's: ``down``, or a cast back to ``old_type``."""
        if self.down is not None:
            return self.down
        return f"{ident(self.column)}::{old_type}" if self.type is not None else ident(self.column)

    # -- lifecycle -------------------------------------------------------------------------

    def validate_live(self, ctx: Context) -> None:
        validate(self, ctx)

    def expand(self, ctx: Context) -> Sequence[Step]:
        facts = self.facts(ctx)
        t = ident(ctx.schema, self.table)
        col = ident(self.column)
        saved = _record(facts)
        steps = [
            step(
                "save",
                f"remember {self.table}.{self.column} as it is, for the rollback",
                *self.record(ctx).save_sql(json.dumps(saved)),
            )
        ]
        if self.type is not None and self.changes_type(facts):
            if self.in_place(ctx, facts):
                steps.append(self._retype_in_place(ctx, facts, self.type, "retype"))
            else:
                steps += shadow_steps(self, ctx, facts)
        elif self.rewrites_data():
            steps += shadow_steps(self, ctx, facts)
        if self.nullable is True and facts.not_null:
            ctx.notes.append(
                f"{self.where()}: DROP NOT NULL: the old version may now read NULLs in "
                f"{self.table}.{self.column} (LINT rule 15)"
            )
            steps.append(
                step(
                    "drop-not-null",
                    f"{self.table}.{self.column} may hold NULL",
                    f"ALTER TABLE {t} ALTER COLUMN {col} DROP NOT NULL",
                )
            )
        if self.default is not None and not self.shadowed(ctx):
            steps.append(
                step(
                    "set-default",
                    f"default of {self.table}.{self.column}",
                    f"ALTER TABLE {t} ALTER COLUMN {col} SET DEFAULT {default_sql(self.default)}",
                )
            )
        if self.sets_comment():
            # A step of its own: COMMENT ON takes SHARE UPDATE EXCLUSIVE, which queues
            # behind a VACUUM or an index build (lint rule M039 warns of it).
            steps.append(self._comment_step(ctx, "comment", self.comment))
        return steps

    def _comment_step(self, ctx: Context, key: str, comment: object) -> Step:
        value = "NULL" if comment is None else literal(str(comment))
        return step(
            key,
            f"comment on {self.table}.{self.column}",
            f"COMMENT ON COLUMN {ident(ctx.schema, self.table)}.{ident(self.column)} IS {value}",
        )

    def _retype_in_place(self, ctx: Context, facts: ColumnFacts, new_type: str, key: str) -> Step:
        """A catalog-only ALTER TYPE; views over the column are dropped and re-created
        around it in the same transaction (PostgreSQL refuses it under a view)."""
        t = ident(ctx.schema, self.table)
        sqls = []
        if dependent_views(ctx.catalog, facts):
            sqls.append(save_and_drop_views_sql(ctx.schema, self.table, self.column))
        sqls.append(f"ALTER TABLE {t} ALTER COLUMN {ident(self.column)} TYPE {new_type}")
        if len(sqls) > 1:
            sqls.append(restore_views_sql())
        return step(key, f"{self.table}.{self.column} becomes {new_type} (no rewrite)", *sqls)

    def kept_indexes(self, ctx: Context, facts: ColumnFacts) -> list[IndexFacts]:
        """The column's indexes the shadow gets: all but a dropped constraint's."""
        return [
            i
            for i in column_indexes(ctx.catalog, facts)
            if self._dropping is None or i.constraint != self._dropping
        ]

    def backfills(self, ctx: Context) -> Sequence[BackfillSpec]:
        if self.type is None and not self.rewrites_data():
            return ()
        facts = column_facts(ctx.catalog, ctx.schema, self.table, self.column)
        if facts is None or not self.shadowed(ctx):
            return ()
        return (shadow_backfill(self, ctx),)

    def contract(self, ctx: Context) -> Sequence[Step]:
        facts = self.facts(ctx)
        drop_saved = self.record(ctx).forget_sql()
        if self.shadowed(ctx):
            return swap_steps(self, ctx, facts, drop_saved)
        # Tightening waits for the contract: a CHECK, UNIQUE or FOREIGN KEY is enforced
        # on new writes from the moment it is added, and the old version's writes must
        # not start failing while it runs.
        steps: list[Step] = self.tightening().steps(ctx, self.column)
        if self.nullable is False and not facts.not_null:
            steps += not_null_steps(ctx.schema, self.table, self.column)
        if self.drops_default():
            # The old version may insert without the column and rely on its default:
            # it goes once that version is gone.
            steps.append(
                step(
                    "drop-default",
                    f"{self.table}.{self.column} loses its default",
                    f"ALTER TABLE {ident(ctx.schema, self.table)} ALTER COLUMN "
                    f"{ident(self.column)} DROP DEFAULT",
                )
            )
        steps.append(step("forget", "drop the saved record of the column", drop_saved))
        return steps

    def rollback(self, ctx: Context) -> Sequence[Step]:
        facts = self.facts(ctx)
        saved = self.column_before(ctx, facts)
        t = ident(ctx.schema, self.table)
        col = ident(self.column)
        steps: list[Step] = []
        if self.default is not None:
            old = saved.get("default")
            steps.append(
                step(
                    "restore-default",
                    f"default of {self.table}.{self.column} as before",
                    f"ALTER TABLE {t} ALTER COLUMN {col} SET DEFAULT {old}"
                    if old is not None
                    else f"ALTER TABLE {t} ALTER COLUMN {col} DROP DEFAULT",
                )
            )
        if self.sets_comment():
            steps.append(self._comment_step(ctx, "restore-comment", saved.get("comment")))
        shadow = self.shadow_name()
        if self.expanded(ctx):
            relaxed = self.nullable is True and bool(saved.get("not_null")) and not facts.not_null
            shadowed = cat_has(ctx, self.table, shadow)
            retyped = not shadowed and self.type is not None and facts.type != saved["type"]
        else:
            # Computed before the expand (migrator render): undo what the expand will do.
            relaxed = self.nullable is True and facts.not_null
            changes = self.type is not None and self.changes_type(facts)
            shadowed = self.rewrites_data() or (changes and not self.in_place(ctx, facts))
            retyped = changes and not shadowed
        if relaxed:
            steps += not_null_steps(ctx.schema, self.table, self.column, key="restore")
        if shadowed:
            steps.append(drop_shadow_step(self, ctx))
        elif retyped:
            ctx.notes.append(
                f"{self.where()}: rollback turns {self.type} back into {saved['type']}; "
                "narrowing scans the table and fails if longer values were written"
            )
            steps.append(self._retype_in_place(ctx, facts, str(saved["type"]), "restore-type"))
        steps.append(
            step("forget", "drop the saved record of the column", self.record(ctx).forget_sql())
        )
        return steps


def _record(facts: ColumnFacts) -> dict[str, object]:
    """What the expand saves of the column for the rollback."""
    return {
        "type": facts.type,
        "default": facts.default,
        "not_null": facts.not_null,
        "comment": facts.comment,
    }


def cat_has(ctx: Context, table: str, column: str) -> bool:
    """True when the live table has the column."""
    return ctx.catalog.column(ctx.schema, table, column) is not None
