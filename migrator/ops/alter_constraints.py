"""`alter_column`'s tightenings (``nullable: false``, ``check``, ``unique``, ``references``):
their names, their validation, and the statements that add them, to the column itself
or, when the plan gives ``up`` / ``down`` without a type change, to the shadow column.

Without ``up`` the contract adds them to the column (the data must already satisfy
them). With ``up`` the expand adds a shadow column of the same type, kept in step by
the sync trigger (`migrator.ops.shadow`): whatever the old version writes reaches the
shadow through ``up``, which rewrites the values the new constraints forbid, and the
backfill does the same to the rows already there; so the contract can add every new
constraint over the shadow (NOT VALID, then validated; the unique index concurrently)
before the swap gives the shadow the column's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from migrator.engine.catalog_columns import expression_error_with, key_type_error
from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context
from migrator.ops.columns import ColumnReference, NamedCheck, NamedUnique, check_sql
from migrator.ops.safe import add_foreign_key_step, unique_steps, validate_step
from migrator.ops.shadow import renamed_constraint
from migrator.ops.validation import (
    refuse_constraint_clash,
    refuse_duplicates,
    require_expression,
    require_table,
)
from migrator.sqltext import ident, short_name


@dataclass(frozen=True)
class Tightening:
    """The constraints one alter_column adds to ``column`` of ``table``."""

    table: str
    column: str
    check: str | NamedCheck | None
    unique: bool | NamedUnique | None
    references: ColumnReference | None

    def check_name(self) -> str:
        """The CHECK of ``check:``: the name given, or <table>_<column>_check."""
        if isinstance(self.check, NamedCheck):
            return self.check.name
        return short_name(self.table, self.column, "check")

    def fk_name(self) -> str:
        """The foreign key of ``references:``: the name given, or <table>_<column>_fkey."""
        if self.references is not None and self.references.name:
            return self.references.name
        return short_name(self.table, self.column, "fkey")

    def unique_name(self) -> str:
        """The UNIQUE constraint (and its index): the name given, or <table>_<column>_key."""
        if isinstance(self.unique, NamedUnique):
            return self.unique.name
        return short_name(self.table, self.column, "key")

    def validate(
        self,
        ctx: Context,
        where: str,
        *,
        up: str | None,
        column_type: str | None = None,
        retyped: bool = False,
    ) -> None:
        """Expressions, references and names; duplicates in the data, or in the data as
        ``up`` rewrites it (given ``up``, the shadow column's form). ``column_type`` is
        the type the constraints land on (``retyped``: the new one of a type change, so
        the check is planned over it); what PostgreSQL cannot build on it is refused."""
        expression = check_sql(self.check)
        if expression is not None:
            if retyped and column_type is not None and self.table not in ctx.planned_tables:
                problem = expression_error_with(
                    ctx.catalog,
                    ctx.schema,
                    self.table,
                    expression,
                    "boolean",
                    self.column,
                    column_type,
                    ctx.planned_column_types.get(self.table, {}),
                )
                if problem:
                    raise ValidationFailed(
                        f"{where}: check {expression!r} does not work on {self.column} as "
                        f"{column_type}: {problem}"
                    )
            else:
                require_expression(ctx, f"{where}: check", self.table, expression, "boolean")
            refuse_constraint_clash(ctx, where, self.table, self.check_name())
        if column_type is not None:
            self._refuse_key_types(ctx, where, column_type)
        if self.unique is not None:
            if self.unique is False:
                raise ValidationFailed(
                    f"{where}: unique: false is not an alter_column change; drop the "
                    "constraint with drop_constraint in the contract"
                )
            name = self.unique_name()
            if ctx.relation_taken(name):
                raise ValidationFailed(f"{where}: the name {name} is already taken in {ctx.schema}")
            refuse_constraint_clash(ctx, where, self.table, name)
            ctx.planned_relations.add(name)
            if up is None:
                refuse_duplicates(ctx, where, self.table, [self.column])
            elif self.table not in ctx.planned_tables:
                # As the shadow holds them: of its type.
                typed = up if column_type is None else f"({up})::{column_type}"
                count, sample = ctx.catalog.duplicates_of(ctx.schema, self.table, typed)
                if count:
                    shown = "; ".join(f"{value} in {rows} rows" for value, rows in sample)
                    more = f" and {count - len(sample)} more" if count > len(sample) else ""
                    raise ValidationFailed(
                        f"{where}: up {up!r} gives {count} value{'s' if count != 1 else ''} "
                        f"more than once, which unique would refuse: {shown}{more}"
                    )
        if self.references is not None:
            ref = self.references
            require_table(ctx, where, ref.table)
            if ref.table not in ctx.planned_tables and not ctx.catalog.has_unique_key(
                ctx.schema, ref.table, [ref.column]
            ):
                raise ValidationFailed(
                    f"{where}: {ref.table}.{ref.column} has no primary key or unique "
                    "constraint for a foreign key to reference"
                )
            refuse_constraint_clash(ctx, where, self.table, self.fk_name())

    def _refuse_key_types(self, ctx: Context, where: str, column_type: str) -> None:
        """A unique constraint or foreign key PostgreSQL cannot build on the column's
        type (no btree operator class; key types without a usable equality)."""
        ref = self.references
        ref_type = None
        if ref is not None and ref.table not in ctx.planned_tables:
            ref_type = next(
                (
                    c.type
                    for c in ctx.catalog.columns(ctx.schema, ref.table)
                    if c.name == ref.column
                ),
                None,
            )
        if not self.unique and ref_type is None:
            return
        if ctx.type_planned(column_type) or (ref_type is not None and ctx.type_planned(ref_type)):
            return  # a type the plan creates: the contract's own statements try it
        if self.unique:
            problem = key_type_error(ctx.catalog, column_type, unique=True, references=None)
            if problem:
                raise ValidationFailed(
                    f"{where}: unique on {self.column} as {column_type} cannot be built: {problem}"
                )
        if ref is not None and ref_type is not None:
            problem = key_type_error(ctx.catalog, column_type, unique=False, references=ref_type)
            if problem:
                # PostgreSQL's own words name the trial's columns: say it of the plan's.
                raise ValidationFailed(
                    f"{where}: references {ref.table}.{ref.column} cannot be built on "
                    f"{self.column} as {column_type}: PostgreSQL has no equality operator "
                    f"between {column_type} and {ref_type} for a foreign key"
                )

    def steps(self, ctx: Context, over: str) -> list[Step]:
        """The contract's steps adding the constraints over column ``over`` (the column
        itself, or its shadow before the swap): NOT VALID, then validated; the unique
        index built concurrently, then the constraint USING it."""
        t = ident(ctx.schema, self.table)
        steps: list[Step] = []
        expression = check_sql(self.check)
        if expression is not None:
            name = self.check_name()
            definition = renamed_constraint(f"CHECK ({expression})", {self.column: over})
            steps += [
                step(
                    "check",
                    f"CHECK {name} on {self.table}.{over}, NOT VALID",
                    f"ALTER TABLE {t} ADD CONSTRAINT {ident(name)} {definition}",
                ),
                validate_step("validate-check", ctx.schema, self.table, name),
            ]
        if self.unique:
            steps += unique_steps("unique", ctx.schema, self.table, self.unique_name(), [over])
        if self.references is not None:
            ref = self.references
            steps += [
                add_foreign_key_step(
                    "foreign-key",
                    ctx.schema,
                    self.table,
                    self.fk_name(),
                    [over],
                    ref.table,
                    [ref.column],
                    ref,
                    catalog=ctx.catalog,
                ),
                validate_step("validate-foreign-key", ctx.schema, self.table, self.fk_name()),
            ]
        return steps
