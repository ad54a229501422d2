"""The `add_exclusion` operation: an exclusion constraint on a table that exists.

PostgreSQL gives an exclusion constraint no lock-light form: ALTER TABLE ... ADD
CONSTRAINT ... EXCLUDE takes no NOT VALID and no USING INDEX (checked on 15 and 18), so
it builds its index, and checks every row by a probe of it, while it holds ACCESS
EXCLUSIVE on the table (reads wait too). migrator cannot shorten that lock; it measures
it first, without blocking anyone, and refuses it when it would be too long:

1. a plain index of the same method over the same keys (and WHERE), built CONCURRENTLY
   (SHARE UPDATE EXCLUSIVE: reads and writes go on), its build timed and the time kept
   in the index's comment;
2. a guard, in its own transaction under ACCESS SHARE: the pairs of rows that already
   conflict, counted through that index (one probe per row, the work the constraint's
   own check does) and timed; conflicts, or build + check above ``max_lock_hold``,
   refuse the release before the strong lock is taken (SQLSTATE MGR01, exit 3, at the
   operation's file:line:column);
3. ADD CONSTRAINT ... EXCLUDE, in a short transaction of its own under the plan's
   lock_timeout and retries: it holds ACCESS EXCLUSIVE for about build + check;
4. the helper index dropped CONCURRENTLY.

A table whose build and check take longer needs a new table created with the constraint
and the rows copied into it; the refusal says so. On a small table (or when the helper
index is there from an earlier attempt) the conflicting rows are counted before anything
runs (exit 2); on a bigger one only for `=` keys and one `&&` range, which one sort of
the rows decides exactly (`exclusion_sweep_sql`); other shapes have no exact way short of
every pair or an index, so the guard finds them (exit 3, saying what to do). The rollback drops the constraint and the helper index; the contract has
nothing to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from migrator.durations import Duration, format_duration
from migrator.engine.catalog_partitions import is_partitioned
from migrator.engine.catalog_tables import (
    exclusion_conflicts,
    exclusion_conflicts_sql,
    exclusion_sweep,
    exclusion_sweep_key,
    relation_bytes,
)
from migrator.engine.steps import PRECHECK_REFUSED, Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.ops.create_table import Exclusion, ExclusionElement, exclusion_error
from migrator.ops.safe import IndexShape, drop_constraint_step, drop_index_sql
from migrator.ops.validation import (
    refuse_constraint_clash,
    require_expression,
    require_table,
)
from migrator.sqltext import dollar_quoted, ident, literal, short_name

# Up to this size the conflicting rows are counted before anything runs, without an
# index (a self-join: pairs of rows); above it the expand's helper index counts them.
PRECHECK_BYTES = 256 * 1024
_TIMED = "migrator: exclusion build took "


def helper_index_name(name: str) -> str:
    """The plain index the expand builds to find conflicts and time the build."""
    return short_name(name, "probe", prefix="_migrator_")


class AddExclusion(Operation):
    """`add_exclusion`: the keys of create_table's ``exclude`` plus table and name."""

    op_name: ClassVar[str] = "add_exclusion"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    name: Identifier
    using: str = Field(default="gist", pattern=r"^[a-z_][a-z0-9_]*$")
    elements: list[ExclusionElement] = Field(min_length=1)
    where: str | None = None
    max_lock_hold: Duration = Field(
        default=1.0,
        description="refuse when the index build and the rows' check, timed on a concurrent "
        "copy of the index, take longer (ADD CONSTRAINT ... EXCLUDE holds ACCESS EXCLUSIVE "
        "through both)",
    )

    def describe(self) -> str:
        return f"exclusion {self.name} on {self.table}"

    def _exclusion(self) -> Exclusion:
        return Exclusion(using=self.using, elements=self.elements, where=self.where)

    def _keys(self, ctx: Context) -> list[str]:
        return self._exclusion().keys(ctx.column_names(self.table))

    def _operators(self) -> list[str]:
        return [e.with_ for e in self.elements]

    def validate_live(self, ctx: Context) -> None:
        where = f"add_exclusion {self.name}"
        require_table(ctx, where, self.table)
        if self.table not in ctx.planned_tables and is_partitioned(
            ctx.catalog, ctx.schema, self.table
        ):
            raise ValidationFailed(
                f"{where}: {self.table} is partitioned, and an index cannot be built "
                "concurrently on a partitioned table; add the constraint to each partition"
            )
        names = ctx.column_names(self.table)
        for e in self.elements:
            if e.column in names:
                continue
            if e.column.isidentifier():
                raise ValidationFailed(
                    f"{where}: {ctx.schema}.{self.table} has no column {e.column}"
                )
            require_expression(ctx, f"{where}: element", self.table, e.column)
        if self.where is not None:
            require_expression(ctx, f"{where}: where", self.table, self.where, "boolean")
        refuse_constraint_clash(ctx, where, self.table, self.name)
        if ctx.relation_taken(self.name):
            raise ValidationFailed(
                f"{where}: a relation named {ctx.schema}.{self.name} already exists (the "
                "name the constraint's index takes)"
            )
        helper = helper_index_name(self.name)
        found = ctx.catalog.index(ctx.schema, helper)
        if (found is None and ctx.relation_taken(helper)) or (
            found is not None and found.table != self.table
        ):
            raise ValidationFailed(
                f"{where}: {ctx.schema}.{helper}, the name of the helper index, is taken"
            )
        ctx.planned_relations.update({self.name, helper})
        if self.table in ctx.planned_tables:
            self._try_on_planned_table(ctx, where)
            return  # no rows yet: nothing can conflict
        # Columns earlier operations add are added to the empty copy the operators are
        # tried on; a type the plan creates is not there to name.
        extra = ctx.planned_column_types.get(self.table, {})
        if any(ctx.type_planned(t) for t in extra.values()):
            return  # nothing to try it on yet: the expand's guard and ADD CONSTRAINT do
        problem = exclusion_error(ctx, self.table, self.name, self._exclusion(), extra=extra)
        if problem:
            raise ValidationFailed(f"{where}: PostgreSQL refuses the exclusion: {problem}")
        if extra:
            return  # the rows have no such column yet: the expand's guard counts conflicts
        indexed = found is not None and found.valid
        keys = self._keys(ctx)
        if indexed or relation_bytes(ctx.catalog, ctx.schema, self.table) <= PRECHECK_BYTES:
            count, example = exclusion_conflicts(
                ctx.catalog, ctx.schema, self.table, keys, self._operators(), self.where
            )
            if count:
                raise ValidationFailed(f"{where}: {self._conflict_text(count, example)}")
            return
        # A bigger table: `=` over some keys and `&&` over one range (a booking's shape)
        # is decided exactly by one sort of the rows; any other shape needs an index.
        at = exclusion_sweep_key(ctx.catalog, ctx.schema, self.table, keys, self._operators())
        if at is not None:
            rows, example = exclusion_sweep(
                ctx.catalog, ctx.schema, self.table, keys, at, self.where
            )
            if rows:
                named = ", ".join(e.column for e in self.elements)
                raise ValidationFailed(
                    f"{where}: {rows} row(s) of {self.table} conflict under the exclusion with "
                    f"another row, e.g. ({named}) = {example}; fix them first"
                )

    def _try_on_planned_table(self, ctx: Context, where: str) -> None:
        """A table an earlier operation creates: the operators tried on an empty table of
        its planned columns (create_table's types, and add_column's), as create_table's
        own ``exclude`` is; skipped where a type is one the plan creates, not there yet."""
        types = ctx.planned_table_types.get(self.table, {})
        names = ctx.planned_tables[self.table]
        if any(n not in types or ctx.type_planned(types[n]) for n in names):
            return
        columns = [(n, types[n]) for n in names]
        problem = exclusion_error(ctx, self.table, self.name, self._exclusion(), columns)
        if problem:
            raise ValidationFailed(f"{where}: PostgreSQL refuses the exclusion: {problem}")

    def _conflict_text(self, count: int, example: str | None) -> str:
        keys = ", ".join(e.column for e in self.elements)
        pairs = "pair" if count == 1 else "pairs"
        return (
            f"{count} {pairs} of rows of {self.table} conflict under the exclusion, e.g. "
            f"({keys}) = {example}; fix them first"
        )

    def expand(self, ctx: Context) -> Sequence[Step]:
        helper = helper_index_name(self.name)
        keys = self._keys(ctx)
        index = ident(ctx.schema, helper)
        timed = dollar_quoted(
            f"BEGIN EXECUTE format('COMMENT ON INDEX %s IS %L', {literal(index)}, "
            f"{literal(_TIMED)} || extract(epoch FROM clock_timestamp() - "
            "current_setting('migrator.build_started')::timestamptz)); END"
        )
        return [
            step(
                "exclusion-helper-index",
                f"helper index {helper} on {self.table}, built concurrently and timed",
                drop_index_sql(ctx.schema, helper),
                "SELECT set_config('migrator.build_started', clock_timestamp()::text, false)",
                IndexShape(tuple(keys), method=self.using, where=self.where).create_sql(
                    ctx.schema, self.table, helper
                ),
                f"DO {timed}",
                autocommit=True,
            ),
            step(
                "exclusion-guard",
                f"rows conflicting under {self.name}, and the timed build, checked",
                self._guard_sql(ctx, helper, keys),
            ),
            step(
                "exclusion-constraint",
                f"EXCLUDE {self.name} on {self.table}: builds its index under ACCESS EXCLUSIVE",
                self.constraint_sql(ctx),
            ),
            step(
                "exclusion-drop-helper",
                f"drop the helper index {helper} concurrently",
                drop_index_sql(ctx.schema, helper),
                autocommit=True,
            ),
        ]

    def constraint_sql(self, ctx: Context) -> str:
        """ALTER TABLE ... ADD CONSTRAINT ... EXCLUDE, on the table in ``ctx.schema``."""
        return (
            f"ALTER TABLE {ident(ctx.schema, self.table)} ADD CONSTRAINT {ident(self.name)} "
            + self._exclusion().sql(ctx.column_names(self.table))
        )

    def _guard_sql(self, ctx: Context, helper: str, keys: list[str]) -> str:
        """A DO block that raises MGR01 (the executor's precheck refusal) on conflicting
        rows or on a build slower than ``max_lock_hold``; it reads, locks nothing more."""
        conflicts = exclusion_conflicts_sql(
            ctx.schema, self.table, keys, self._operators(), self.where
        )
        where = f"add_exclusion {self.name}"
        keys_named = ", ".join(e.column for e in self.elements)
        limit = self.max_lock_hold
        holds = " and ".join(f"{e.column} {e.with_} {e.column}" for e in self.elements)
        if self.where:
            holds += f", both with {self.where}"
        # format()'s text, with % doubled where the plan's expressions may hold one.
        big = (
            f"{self.table} is larger than {PRECHECK_BYTES // 1024} kB, too big to compare "
            "every pair of its rows before anything changes, so they were counted through "
        )
        conflict_text = literal(
            f"{where}: %s pair(s) of rows of {self.table} conflict under the exclusion, "
            f"e.g. ({_pct(keys_named)}) = %s; %sthe helper index "
            f"{ident(ctx.schema, helper)}, built concurrently and left in place; nothing else "
            f"changed. Change or delete one row of each pair (two rows conflict where "
            f"{_pct(holds)} holds between them), then run `migrator expand` again: it goes on "
            "from this check, with that index; or `migrator rollback`, which drops it"
        )
        slow_text = literal(
            f"{where}: its index took %s s to build concurrently and its rows %s s to verify "
            "through it, above max_lock_hold "
            f"{format_duration(limit)}; ADD CONSTRAINT ... EXCLUDE does both while it holds "
            f"ACCESS EXCLUSIVE on {self.table}. Create a new table with the constraint "
            "(create_table with exclude) and copy the rows into it instead, or raise "
            "max_lock_hold (then run expand again with --accept-changed-plan, or roll back)"
        )
        # The constraint's build checks every row by one probe of its own index, as the
        # count below does through the helper: on 200,000 rows (bench/exclusion.py) build +
        # count was 48.6 s for a 46.9 s hold on 18, 42.3 s for 40.0 s on 15.
        body = f"""
DECLARE
  n bigint;
  example text;
  started timestamptz := clock_timestamp();
  checked double precision;
  took double precision;
BEGIN
  SELECT * INTO n, example FROM ({conflicts}) AS found;
  checked := extract(epoch FROM clock_timestamp() - started);
  IF n > 0 THEN
    RAISE EXCEPTION USING ERRCODE = {literal(PRECHECK_REFUSED)},
      MESSAGE = format({conflict_text}, n, example,
        CASE WHEN pg_relation_size({literal(ident(ctx.schema, self.table))}::regclass)
                  > {PRECHECK_BYTES}
             THEN {literal(big)} ELSE 'they were counted through ' END);
  END IF;
  took := substring(obj_description({literal(ident(ctx.schema, helper))}::regclass, 'pg_class')
    FROM {literal(_TIMED + "([0-9.]+)")})::double precision;
  IF coalesce(took, 0) + checked > {limit} THEN
    RAISE EXCEPTION USING ERRCODE = {literal(PRECHECK_REFUSED)},
      MESSAGE = format({slow_text}, round(coalesce(took, 0)::numeric, 3),
                       round(checked::numeric, 3));
  END IF;
END"""
        return f"DO {dollar_quoted(body)}"

    def rollback(self, ctx: Context) -> Sequence[Step]:
        helper = helper_index_name(self.name)
        return [
            drop_constraint_step("drop-exclusion", ctx.schema, self.table, self.name),
            step(
                "drop-helper-index",
                f"drop the helper index {helper} if it is still there",
                drop_index_sql(ctx.schema, helper),
                autocommit=True,
            ),
        ]


def _pct(text: str) -> str:
    """Plan text inside a format() string: its % doubled."""
    return text.replace("%", "%%")
