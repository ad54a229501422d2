"""The `add_column` operation.

Expand adds the column nullable (a NOT NULL column would break the old version's
INSERTs) with at most a constant default, which PostgreSQL 11+ stores without a
rewrite. With ``up``, a trigger fills the column on rows the old version writes, and a
batched backfill fills the rows already there. The contract tightens the column to its
final shape: SET NOT NULL through a validated CHECK, so the ACCESS EXCLUSIVE lock is
never held through a table scan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from pydantic import Field

from migrator.engine.catalog_columns import column_facts, default_breaks_key
from migrator.engine.catalog_partitions import is_partitioned, partitions
from migrator.engine.steps import BackfillSpec, Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import ChangedColumn, Context, Operation, Phase
from migrator.ops.columns import (
    ColumnSpec,
    FinalColumn,
    Identifier,
    NamedCheck,
    check_name,
    check_sql,
    reference_name,
    unique_name,
)
from migrator.ops.expressions import (
    column_refs,
    default_sql,
    is_constant,
    trigger_function_sql,
    type_names,
)
from migrator.ops.partitioned import (
    foreign_key_per_partition,
    foreign_key_steps,
    partition_key_missing,
    refuse_partition_constraint_clash,
    refuse_unique_without_partition_key,
)
from migrator.ops.safe import (
    add_check_step,
    add_foreign_key_step,
    is_ours,
    lock_referenced_sql,
    not_null_check_name,
    not_null_steps,
    unique_steps,
    validate_step,
)
from migrator.ops.validation import expression_columns, refuse_duplicates
from migrator.pgtypes import is_serial
from migrator.sqltext import ident, literal, private_function_sql, short_name


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

    def column_changes(self) -> Sequence[ChangedColumn]:
        # synced: a trigger fills the column on the rows the old version writes.
        return (
            ChangedColumn(
                self.table,
                self.column.name,
                "add",
                f"added as {self.column.type}",
                "expand",
                # PostgreSQL fills an identity or generated column on every write
                synced=self._fill_expression() is not None or self.computed,
            ),
        )

    # -- names -------------------------------------------------------------------------

    @property
    def computed(self) -> bool:
        """True for an identity or generated column: PostgreSQL fills every row itself."""
        return self.column.identity is not None or self.column.generated is not None

    @property
    def final_not_null(self) -> bool:
        """True when the contract makes the column NOT NULL (an identity or generated
        column is filled on every row by the ADD COLUMN, and made NOT NULL there)."""
        if self.computed:
            return False
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
        """The sync trigger on inserts (trigger names are per table)."""
        return short_name(self.column.name, "sync", prefix="_migrator_")

    def update_trigger_name(self) -> str:
        """The sync trigger on updates."""
        return short_name(self.column.name, "sync", "update", prefix="_migrator_")

    def function_name(self, ctx: Context) -> str:
        """The trigger function, kept in migrator's own schema."""
        return ident("migrator", short_name(ctx.schema, self.table, self.column.name, "sync"))

    def check_name(self) -> str:
        """The temporary CHECK that lets SET NOT NULL skip its scan."""
        return not_null_check_name(self.table, self.column.name)

    def check_constraint_name(self) -> str | None:
        """The column's CHECK: the name given, or as PostgreSQL would name it."""
        return check_name(self.column.check, self.table, self.column.name)

    def final_check_name(self) -> str | None:
        """The CHECK the contract adds (``check1`` beside a column.check, as PostgreSQL does)."""
        if self.final is None or self.final.check is None:
            return None
        if isinstance(self.final.check, NamedCheck):
            return self.final.check.name
        suffix = "check1" if self.column.check is not None else "check"
        return short_name(self.table, self.column.name, suffix)

    def foreign_key_name(self) -> str:
        """The column's foreign key: the name given, or as PostgreSQL would name it."""
        ref = self.column.references
        if ref is None:
            return short_name(self.table, self.column.name, "fkey")
        return reference_name(ref, self.table, self.column.name)

    def unique_name(self) -> str | None:
        """The UNIQUE constraint (and its index), from column.unique or final.unique."""
        if self.column.unique:
            return unique_name(self.column.unique, self.table, self.column.name)
        if self.final is not None and self.final.unique:
            return unique_name(self.final.unique, self.table, self.column.name)
        return None

    # -- lifecycle -----------------------------------------------------------------------

    def validate_live(self, ctx: Context) -> None:
        where = f"add_column {self.table}.{self.column.name}"
        cat = ctx.catalog
        if not ctx.table_known(self.table):
            raise ValidationFailed(f"{where}: table {ctx.schema}.{self.table} does not exist")
        existing = ctx.column_names(self.table)
        if self.column.name in existing:
            raise ValidationFailed(
                f"{where}: column {self.column.name} already exists in {ctx.schema}.{self.table}"
            )
        if is_serial(self.column.type):
            raise ValidationFailed(
                f"{where}: a {self.column.type} column on an existing table rewrites it under "
                "ACCESS EXCLUSIVE; add a plain bigint column with `up` (a backfill) and set its "
                "default to nextval() of a sequence made with `sql`"
            )
        if not ctx.type_known(self.column.type):
            raise ValidationFailed(f"{where}: unknown type {self.column.type!r}")
        if self.computed:
            self._validate_computed(ctx, where, existing)
        self._validate_constraints(ctx, where, [*existing, self.column.name])
        fill = self._fill_expression()
        if fill is not None:
            try:
                column_refs(fill)
            except ValueError as exc:
                raise ValidationFailed(f"{where}: up: {exc}") from None
            # A table, or a type, an earlier operation of the plan creates is not there
            # to try the expression on; the expand's transaction tries it for real.
            extra = ctx.planned_column_types.get(self.table, {})
            planned_type = any(
                ctx.type_planned(name)
                for name in [self.column.type, *type_names(fill), *extra.values()]
            )
            problem = (
                None
                if self.table in ctx.planned_tables or planned_type
                else cat.expression_error(ctx.schema, self.table, fill, self.column.type, extra)
            )
            if problem:
                raise ValidationFailed(
                    f"{where}: up {fill!r} does not work on the table: {problem}"
                )
        if self.final_not_null and fill is None and self.column.default is None:
            raise ValidationFailed(
                f"{where}: the column ends NOT NULL but has neither `up` nor a default to fill "
                "the rows already there and the rows the old version writes"
            )
        if self.table in ctx.planned_tables:
            ctx.planned_tables[self.table] = [*existing, self.column.name]
            ctx.planned_table_types.setdefault(self.table, {})[self.column.name] = self.column.type
        else:
            ctx.plan_column(self.table, self.column.name, self.column.type)

    def _validate_computed(self, ctx: Context, where: str, existing: list[str]) -> None:
        """An identity or generated column: PostgreSQL fills it, on every row at once."""
        kind = "an identity" if self.column.identity is not None else "a generated"
        if self.up is not None:
            raise ValidationFailed(
                f"{where}: up fills a plain column; {kind} column is filled by PostgreSQL"
            )
        if self.final is not None and (
            self.final.default is not None or self.final.nullable is not None
        ):
            raise ValidationFailed(
                f"{where}: final.default and final.nullable do not apply to {kind} column "
                "(it has a value on every row from the start)"
            )
        generated = self.column.generated
        if generated is not None:
            refs = expression_columns(
                f"{where}: generated", generated, existing, f"which {self.table} does not have"
            )
            planned = ctx.planned_generated.get(self.table, set())
            chained = [
                r
                for r in refs
                if r in planned
                or (
                    self.table not in ctx.planned_tables
                    and (facts := column_facts(ctx.catalog, ctx.schema, self.table, r)) is not None
                    and facts.generated != ""
                )
            ]
            if chained:
                raise ValidationFailed(
                    f"{where}: generated reads {', '.join(chained)}, itself a generated "
                    "column; PostgreSQL computes a generated column from plain columns only: "
                    "write the other expression in instead"
                )
            ctx.planned_generated.setdefault(self.table, set()).add(self.column.name)
        if self.table not in ctx.planned_tables:
            what = (
                "computes the expression for"
                if generated is not None
                else "draws a sequence value for"
            )
            ctx.notes.append(
                f"{where}: ADD COLUMN of {kind} column {what} every row: a table rewrite "
                "under ACCESS EXCLUSIVE (LINT rule M013). The lock-safe form is a plain "
                "column with `up` (a trigger for new rows and a batched backfill)"
            )

    def _validate_constraints(self, ctx: Context, where: str, columns: list[str]) -> None:
        """The column's check, references and unique, and the final ones."""
        checks = [("column.check", self.column.check_sql)]
        if self.final is not None:
            checks.append(("final.check", check_sql(self.final.check)))
        for key, expression in checks:
            if expression is not None:
                expression_columns(
                    f"{where}: {key}", expression, columns, f"which {self.table} does not have"
                )
        names = [self.check_constraint_name(), self.final_check_name(), self.unique_name()]
        self._refuse_partitioned_unique(ctx, where)
        if self.column.references is not None:
            ref = self.column.references
            names.append(self.foreign_key_name())
            if not ctx.table_known(ref.table):
                raise ValidationFailed(
                    f"{where}: column.references: table {ctx.schema}.{ref.table} does not exist"
                )
            if ref.column not in ctx.column_names(ref.table):
                raise ValidationFailed(
                    f"{where}: column.references: {ref.table} has no column {ref.column}"
                )
            if ref.table not in ctx.planned_tables and not ctx.catalog.has_unique_key(
                ctx.schema, ref.table, [ref.column]
            ):
                raise ValidationFailed(
                    f"{where}: column.references: {ref.table}.{ref.column} is not a primary key "
                    "or unique, so it cannot be referenced"
                )
            refuse_partition_constraint_clash(
                ctx, f"{where}: column.references", self.table, self.foreign_key_name()
            )
            default = self.column.default
            if (
                default is not None
                and is_constant(default)
                and self.table not in ctx.planned_tables
                and ref.table not in ctx.planned_tables
                and default_breaks_key(
                    ctx.catalog,
                    ctx.schema,
                    self.table,
                    self.column.type,
                    default_sql(default),
                    ref.table,
                    ref.column,
                )
            ):
                # Found now, not by the VALIDATE (the contract's, or on a partitioned
                # table before 18 the expand's own, at its first leaf).
                raise ValidationFailed(
                    f"{where}: column.references: every row of {self.table} would hold the "
                    f"default {default_sql(default)}, which {ref.table}.{ref.column} does not "
                    "hold; add that row first, or fill the column with `up` instead"
                )
        if self.final is not None and self.final.unique is False and self.column.unique:
            raise ValidationFailed(
                f"{where}: final.unique: false would loosen column.unique; drop the constraint "
                "with drop_constraint under contract: instead"
            )
        if self.column.unique and self.column.default is not None:
            if is_constant(self.column.default) and (
                self.table not in ctx.planned_tables
                and ctx.catalog.row_count(ctx.schema, self.table) > 1
            ):
                raise ValidationFailed(
                    f"{where}: column.unique with the constant default "
                    f"{default_sql(self.column.default)} would give every existing row the "
                    "same value; use `up` to fill distinct values and final.unique"
                )
        for name in names:
            if name is None:
                continue
            if ctx.constraint_taken(self.table, name):
                raise ValidationFailed(
                    f"{where}: {self.table} already has a constraint named {name}"
                )
            ctx.plan_constraint(self.table, name)
        if self.table in ctx.planned_tables:
            return
        unique = self.unique_name()
        if unique is not None:
            if ctx.relation_taken(unique):
                raise ValidationFailed(f"{where}: a relation named {unique} already exists")
            ctx.planned_relations.add(unique)

    def _refuse_partitioned_unique(self, ctx: Context, where: str) -> None:
        """A UNIQUE of the new column alone on a partitioned table: PostgreSQL checks
        uniqueness per partition, so a unique key there holds the partition key, which a
        new column is never part of. add_unique's refusal, with the key that would do."""
        if self.unique_name() is None or self.table in ctx.planned_tables:
            return
        if not is_partitioned(ctx.catalog, ctx.schema, self.table):
            return
        key = "column.unique" if self.column.unique else "final.unique"
        missing = partition_key_missing(ctx, self.table, [self.column.name])
        columns = ", ".join([self.column.name, *(missing or [])])
        refuse_unique_without_partition_key(
            where,
            key,
            self.table,
            missing,
            hint=f"add the column, then add_unique with columns [{columns}]",
        )

    def _foreign_key_add(self, ctx: Context) -> Callable[[str, str, str, bool, str], Step]:
        """The ADD CONSTRAINT step of the column's foreign key on one table (the table,
        or one of its partitions: see ops/partitioned.py)."""
        ref = self.column.references
        assert ref is not None

        def add(schema: str, table: str, key: str, valid: bool, description: str) -> Step:
            return add_foreign_key_step(
                key,
                schema,
                table,
                self.foreign_key_name(),
                [self.column.name],
                ref.table,
                [ref.column],
                ref,
                catalog=ctx.catalog,
                not_valid=not valid,
                description=description,
                ref_schema=ctx.schema,
            )

        return add

    def expand(self, ctx: Context) -> Sequence[Step]:
        table = ident(ctx.schema, self.table)
        col = ident(self.column.name)
        add = f"ALTER TABLE {table} ADD COLUMN {col} {self.column.type}"
        add += self.column.generated_sql()
        if self.column.generated is not None and not self.column.nullable:
            add += " NOT NULL"
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
        if self.column.comment is not None:
            # In the ADD COLUMN's transaction, which holds the table already: no wait of
            # its own (COMMENT ON alone queues behind a VACUUM, lint rule M039).
            statements.append(f"COMMENT ON COLUMN {table}.{col} IS {literal(self.column.comment)}")
        steps = [step("add-column", f"add {self.table}.{self.column.name}", *statements)]
        fill = self._fill_expression()
        if fill is not None:
            steps.append(
                step(
                    "sync-trigger",
                    f"trigger filling {self.table}.{self.column.name} on old-version writes",
                    self._function_sql(ctx, fill),
                    private_function_sql(self.function_name(ctx)),
                    *self._trigger_sql(ctx, fill),
                )
            )
        check = self.check_constraint_name()
        if check is not None and self.column.check_sql is not None:
            steps.append(
                add_check_step("check", ctx.schema, self.table, check, self.column.check_sql)
            )
        if self.column.references is not None:
            # On a partitioned table before 18: leaf by leaf, validated here (ops/partitioned.py).
            steps += foreign_key_steps(
                ctx, "foreign-key", self.table, self.foreign_key_name(), self._foreign_key_add(ctx)
            )
        unique = self.unique_name()
        if self.column.unique and unique is not None:
            steps += unique_steps(
                "unique",
                ctx.schema,
                self.table,
                unique,
                [self.column.name],
                release=ctx.release,
                reuse_index=is_ours(ctx.catalog.index(ctx.schema, unique), self.table, ctx.release),
            )
        return steps

    def _sources(self, ctx: Context, fill: str) -> list[str]:
        """The table's other columns the fill expression reads."""
        others = {name for name in ctx.column_names(self.table) if name != self.column.name}
        return [name for name in column_refs(fill) if name in others]

    def _update_condition(self, ctx: Context, fill: str) -> str:
        """When an UPDATE must compute the column.

        - The row was never filled (the backfill has not reached it): any update fills
          it, so a row whose key moves behind the backfill's walk is not left behind.
        - The statement left the column alone (the old version does not know it) and
          changed what it is computed from.

        A value the new version wrote is never overwritten.
        """
        target = ident(self.column.name)
        unfilled = f"NEW.{target} IS NULL AND OLD.{target} IS NULL"
        sources = self._sources(ctx, fill)
        if not sources:
            return unfilled
        changed = " OR ".join(f"NEW.{ident(s)} IS DISTINCT FROM OLD.{ident(s)}" for s in sources)
        return f"({unfilled}) OR (NEW.{target} IS NOT DISTINCT FROM OLD.{target} AND ({changed}))"

    def _trigger_sql(self, ctx: Context, fill: str) -> list[str]:
        """The two row triggers, each filtered by a WHEN condition.

        The conditions are the function's own, checked by the executor before any
        PL/pgSQL runs: a write that sets the column itself (the new version's, the
        backfill's), or an update of a filled row that leaves the source columns alone
        (most of the application's), costs a comparison, not a function call.
        """
        table = ident(ctx.schema, self.table)
        target = ident(self.column.name)
        function = self.function_name(ctx)
        return [
            f"DROP TRIGGER IF EXISTS {ident(self.trigger_name())} ON {table}",
            f"DROP TRIGGER IF EXISTS {ident(self.update_trigger_name())} ON {table}",
            f"CREATE TRIGGER {ident(self.trigger_name())} BEFORE INSERT ON {table} "
            f"FOR EACH ROW WHEN (NEW.{target} IS NULL) EXECUTE FUNCTION {function}()",
            f"CREATE TRIGGER {ident(self.update_trigger_name())} BEFORE UPDATE ON {table} "
            f"FOR EACH ROW WHEN ({self._update_condition(ctx, fill)}) "
            f"EXECUTE FUNCTION {function}()",
        ]

    def _function_sql(self, ctx: Context, fill: str) -> str:
        target = ident(self.column.name)
        table = ident(ctx.schema, self.table)
        # The plan's expression names columns bare; declare one variable per column so
        # it reads the row being written, as pgroll does.
        # Names only (types come from %TYPE), so a table an earlier operation of the
        # plan creates or renames is known too.
        others = [name for name in ctx.column_names(self.table) if name != self.column.name]
        declare = "".join(
            f"  {ident(name)} {table}.{ident(name)}%TYPE := NEW.{ident(name)};\n" for name in others
        )
        # The triggers' WHEN conditions filter the rows; the function checks them again,
        # so it stays right on its own.
        update_branch = (
            f"  ELSIF {self._update_condition(ctx, fill)} THEN\n    NEW.{target} := ({fill});\n"
        )
        return trigger_function_sql(
            self.function_name(ctx),
            declare,
            "  IF TG_OP = 'INSERT' THEN\n"
            f"    IF NEW.{target} IS NULL THEN\n"
            f"      NEW.{target} := ({fill});\n"
            "    END IF;\n"
            f"{update_branch}"
            "  END IF;\n"
            "  RETURN NEW;\n",
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
        check = self.check_constraint_name()
        if check is not None:
            steps.append(validate_step("validate-check", ctx.schema, self.table, check))
        if self.column.references is not None and not foreign_key_per_partition(ctx, self.table):
            steps.append(
                validate_step(
                    "validate-foreign-key", ctx.schema, self.table, self.foreign_key_name()
                )
            )
        final_check = self.final_check_name()
        final_sql = check_sql(self.final.check) if self.final is not None else None
        if final_check is not None and final_sql is not None:
            steps += [
                add_check_step("final-check", ctx.schema, self.table, final_check, final_sql),
                validate_step("validate-final-check", ctx.schema, self.table, final_check),
            ]
        self._refuse_final_conflicts(ctx)
        unique = self.unique_name()
        if unique is not None and not self.column.unique:
            # Stored now, run later: the block always drops a leftover of a failed
            # attempt before building (validation made sure the name is ours).
            steps += unique_steps(
                "final-unique", ctx.schema, self.table, unique, [self.column.name]
            )
        if self.final_not_null:
            steps += not_null_steps(ctx.schema, self.table, self.column.name)
        if self._fill_expression() is not None:
            steps.append(self._drop_trigger_step(ctx, "drop-sync-trigger"))
        return steps

    def _refuse_final_conflicts(self, ctx: Context) -> None:
        """At `complete`, before the contract is scheduled: rows that would make the final
        UNIQUE or NOT NULL fail half-way through the contract are counted and named."""
        if not ctx.catalog.table_exists(ctx.schema, self.table):
            return
        if ctx.catalog.column(ctx.schema, self.table, self.column.name) is None:
            return
        where = f"add_column {self.table}.{self.column.name}: final"
        if self.unique_name() is not None and not self.column.unique:
            refuse_duplicates(ctx, f"{where}.unique", self.table, [self.column.name])
        if self.final_not_null:
            nulls = ctx.catalog.null_count(ctx.schema, self.table, self.column.name)
            if nulls:
                raise ValidationFailed(
                    f"{where}.nullable: {nulls} row{'s' if nulls != 1 else ''} of {self.table} "
                    f"still hold NULL in {self.column.name}; run the backfill (or fill them) "
                    "before completing"
                )

    def _drop_trigger_step(self, ctx: Context, key: str) -> Step:
        return step(
            key,
            f"drop the sync trigger on {self.table}",
            f"DROP TRIGGER IF EXISTS {ident(self.trigger_name())} ON {ident(ctx.schema, self.table)}",
            f"DROP TRIGGER IF EXISTS {ident(self.update_trigger_name())} "
            f"ON {ident(ctx.schema, self.table)}",
            f"DROP FUNCTION IF EXISTS {self.function_name(ctx)}()",
        )

    def rollback(self, ctx: Context) -> Sequence[Step]:
        steps = []
        if self._fill_expression() is not None:
            steps.append(self._drop_trigger_step(ctx, "drop-sync-trigger"))
        ref = self.column.references
        # Its foreign key goes with it, under ACCESS EXCLUSIVE on the referenced table
        # too: that one first (safe.lock_referenced_sql), where the key is there: on the
        # table, or only on partitions where a run before 18 stopped partition by
        # partition (the DROP COLUMN takes theirs with it all the same).
        name = self.foreign_key_name()
        lock = (
            lock_referenced_sql(ctx.catalog, ctx.schema, ref.table, "ACCESS EXCLUSIVE")
            if ref is not None
            and (
                ctx.catalog.constraint_exists(ctx.schema, self.table, name)
                or any(
                    ctx.catalog.constraint_exists(p.schema, p.name, name)
                    for p in partitions(ctx.catalog, ctx.schema, self.table)
                )
            )
            else []
        )
        steps.append(
            step(
                "drop-column",
                f"drop {self.table}.{self.column.name}",
                *lock,
                f"ALTER TABLE IF EXISTS {ident(ctx.schema, self.table)} DROP COLUMN IF EXISTS "
                f"{ident(self.column.name)}",
            )
        )
        return steps
