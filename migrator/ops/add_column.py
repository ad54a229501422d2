"""The `add_column` operation.

Expand adds the column nullable (a NOT NULL column would break the old version's
INSERTs) with at most a constant default, which PostgreSQL 11+ stores without a
rewrite. With ``up``, a trigger fills the column on rows the old version writes, and a
batched backfill fills the rows already there. The contract tightens the column to its
final shape: SET NOT NULL through a validated CHECK, so the ACCESS EXCLUSIVE lock is
never held through a table scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.errors import ValidationFailed
from migrator.ops.base import BackfillSpec, Context, Operation, Phase, Step, step
from migrator.ops.expressions import column_refs, default_sql, is_constant
from migrator.plan.types import ColumnSpec, FinalColumn, Identifier
from migrator.sqltext import ident, short_name


class AddColumn(Operation):
    """`add_column`: a new column, nullable while both versions run."""

    op_name: ClassVar[str] = "add_column"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})

    table: Identifier
    column: ColumnSpec
    up: str | None = Field(
        default=None,
        description="SQL expression over the row: fills existing rows and rows the old version writes",
    )
    final: FinalColumn | None = None

    def describe(self) -> str:
        return f"add column {self.table}.{self.column.name}"

    # -- names -------------------------------------------------------------------------

    @property
    def final_not_null(self) -> bool:
        """True when the contract makes the column NOT NULL."""
        if self.final is not None and self.final.nullable is not None:
            return not self.final.nullable
        return not self.column.nullable

    def _fill_expression(self) -> str | None:
        if self.up is not None:
            return self.up
        if self.column.default is not None and not is_constant(self.column.default):
            return default_sql(self.column.default)
        return None

    def trigger_name(self) -> str:
        """The sync trigger on the table (trigger names are per table)."""
        return short_name(self.column.name, "sync", prefix="_migrator_")

    def function_name(self, ctx: Context) -> str:
        """The trigger function, kept in migrator's own schema."""
        return ident("migrator", short_name(ctx.schema, self.table, self.column.name, "sync"))

    def check_name(self) -> str:
        """The temporary CHECK that lets SET NOT NULL skip its scan."""
        return short_name(self.table, self.column.name, "not_null", prefix="_migrator_")

    # -- lifecycle -----------------------------------------------------------------------

    def validate_live(self, ctx: Context) -> None:
        where = f"add_column {self.table}.{self.column.name}"
        cat = ctx.catalog
        for unsupported in ("check", "references"):
            if getattr(self.column, unsupported) is not None:
                raise ValidationFailed(
                    f"{where}: column.{unsupported} is not supported by add_column yet; "
                    f"add it with add_check / add_foreign_key"
                )
        if self.column.unique:
            raise ValidationFailed(f"{where}: column.unique is not supported yet; use add_unique")
        if self.final is not None and (self.final.check or self.final.unique):
            raise ValidationFailed(f"{where}: final.check and final.unique are not supported yet")
        if not cat.table_exists(ctx.schema, self.table):
            raise ValidationFailed(f"{where}: table {ctx.schema}.{self.table} does not exist")
        if cat.column(ctx.schema, self.table, self.column.name) is not None:
            raise ValidationFailed(
                f"{where}: column {self.column.name} already exists in {ctx.schema}.{self.table}"
            )
        if not cat.type_exists(self.column.type):
            raise ValidationFailed(f"{where}: unknown type {self.column.type!r}")
        fill = self._fill_expression()
        if fill is not None:
            try:
                column_refs(fill)
            except ValueError as exc:
                raise ValidationFailed(f"{where}: up: {exc}") from None
            problem = cat.expression_error(ctx.schema, self.table, fill, self.column.type)
            if problem:
                raise ValidationFailed(
                    f"{where}: up {fill!r} does not work on the table: {problem}"
                )
        if self.final_not_null and fill is None and self.column.default is None:
            raise ValidationFailed(
                f"{where}: the column ends NOT NULL but has neither `up` nor a default to fill "
                "the rows already there and the rows the old version writes"
            )

    def expand(self, ctx: Context) -> Sequence[Step]:
        table = ident(ctx.schema, self.table)
        col = ident(self.column.name)
        add = f"ALTER TABLE {table} ADD COLUMN {col} {self.column.type}"
        statements = []
        default = self.column.default
        if default is not None and is_constant(default):
            add += f" DEFAULT {default_sql(default)}"
        statements.append(add)
        if default is not None and not is_constant(default):
            # A volatile default in ADD COLUMN rewrites the table under ACCESS EXCLUSIVE;
            # set it for new rows only, and let the backfill fill the old ones.
            statements.append(
                f"ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {default_sql(default)}"
            )
        steps = [step("add-column", f"add {self.table}.{self.column.name}", *statements)]
        fill = self._fill_expression()
        if fill is not None:
            steps.append(
                step(
                    "sync-trigger",
                    f"trigger filling {self.table}.{self.column.name} on old-version writes",
                    self._function_sql(ctx, fill),
                    f"DROP TRIGGER IF EXISTS {ident(self.trigger_name())} ON {table}",
                    f"CREATE TRIGGER {ident(self.trigger_name())} BEFORE INSERT OR UPDATE "
                    f"ON {table} FOR EACH ROW EXECUTE FUNCTION {self.function_name(ctx)}()",
                )
            )
        return steps

    def _function_sql(self, ctx: Context, fill: str) -> str:
        target = ident(self.column.name)
        table = ident(ctx.schema, self.table)
        # The plan's expression names columns bare; declare one variable per column so
        # it reads the row being written, as pgroll does.
        others = [
            c.name
            for c in ctx.catalog.columns(ctx.schema, self.table)
            if c.name != self.column.name
        ]
        declare = "".join(
            f"  {ident(name)} {table}.{ident(name)}%TYPE := NEW.{ident(name)};\n" for name in others
        )
        sources = [name for name in column_refs(fill) if name in others]
        changed = " OR ".join(f"NEW.{ident(s)} IS DISTINCT FROM OLD.{ident(s)}" for s in sources)
        # On UPDATE, recompute only when the statement left the column alone (the old
        # version does not know it) and changed what it is computed from; a value the
        # new version wrote is never overwritten.
        update_branch = (
            f"  ELSIF NEW.{target} IS NOT DISTINCT FROM OLD.{target} AND ({changed}) THEN\n"
            f"    NEW.{target} := ({fill});\n"
            if sources
            else ""
        )
        return (
            f"CREATE OR REPLACE FUNCTION {self.function_name(ctx)}() RETURNS trigger\n"
            "LANGUAGE plpgsql AS $migrator$\n"
            f"DECLARE\n{declare}"
            "BEGIN\n"
            f"  IF TG_OP = 'INSERT' THEN\n"
            f"    IF NEW.{target} IS NULL THEN\n"
            f"      NEW.{target} := ({fill});\n"
            "    END IF;\n"
            f"{update_branch}"
            "  END IF;\n"
            "  RETURN NEW;\n"
            "END\n"
            "$migrator$"
        )

    def backfills(self, ctx: Context) -> Sequence[BackfillSpec]:
        fill = self._fill_expression()
        if fill is None:
            return ()
        return (
            BackfillSpec(
                key="backfill",
                schema=ctx.schema,
                table=self.table,
                set={self.column.name: fill},
                needs=f"{ident(self.column.name)} IS NULL",
                description=f"fill {self.table}.{self.column.name}",
            ),
        )

    def contract(self, ctx: Context) -> Sequence[Step]:
        table = ident(ctx.schema, self.table)
        col = ident(self.column.name)
        steps: list[Step] = []
        if self.final is not None and self.final.default is not None:
            steps.append(
                step(
                    "set-default",
                    f"default of {self.table}.{self.column.name}",
                    f"ALTER TABLE {table} ALTER COLUMN {col} "
                    f"SET DEFAULT {default_sql(self.final.default)}",
                )
            )
        if self.final_not_null:
            check = ident(self.check_name())
            steps += [
                step(
                    "not-null-check",
                    f"CHECK ({self.column.name} IS NOT NULL) NOT VALID",
                    f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({col} IS NOT NULL) NOT VALID",
                ),
                step(
                    "validate-not-null",
                    f"validate the NOT NULL check on {self.table}",
                    f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}",
                ),
                step(
                    "set-not-null",
                    f"SET NOT NULL on {self.table}.{self.column.name} (no scan: the check proves it)",
                    f"ALTER TABLE {table} ALTER COLUMN {col} SET NOT NULL",
                    f"ALTER TABLE {table} DROP CONSTRAINT {check}",
                ),
            ]
        if self._fill_expression() is not None:
            steps.append(self._drop_trigger_step(ctx, "drop-sync-trigger"))
        return steps

    def _drop_trigger_step(self, ctx: Context, key: str) -> Step:
        return step(
            key,
            f"drop the sync trigger on {self.table}",
            f"DROP TRIGGER IF EXISTS {ident(self.trigger_name())} ON {ident(ctx.schema, self.table)}",
            f"DROP FUNCTION IF EXISTS {self.function_name(ctx)}()",
        )

    def rollback(self, ctx: Context) -> Sequence[Step]:
        steps = []
        if self._fill_expression() is not None:
            steps.append(self._drop_trigger_step(ctx, "drop-sync-trigger"))
        steps.append(
            step(
                "drop-column",
                f"drop {self.table}.{self.column.name}",
                f"ALTER TABLE {ident(ctx.schema, self.table)} DROP COLUMN IF EXISTS "
                f"{ident(self.column.name)}",
            )
        )
        return steps
