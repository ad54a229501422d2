"""What every operation is: plain data that returns statements, never executes them.

Each operation kind is one module under ``migrator/ops`` with one class. The class is
the YAML model (its fields are the keys the plan takes) and knows its lifecycle:

- ``validate_live(ctx)``: check the plan against the live catalog; raise `ValidationFailed`.
- ``expand(ctx)``: the steps that add what the new version needs.
- ``backfills(ctx)``: the data the expand leaves to fill in batches.
- ``contract(ctx)``: the steps that remove what only the old version needed.
- ``rollback(ctx)``: the steps that undo the expand, while the old version is live.

And what others ask of an operation instead of asking which class it is:
``doomed()`` (what the contract removes), ``column_changes()`` (columns it adds,
renames, retypes, copies or drops) and ``written_sql(phase)`` (SQL the plan wrote).

A step is a group of statements that run in one transaction, or, where PostgreSQL
refuses a transaction (CREATE INDEX CONCURRENTLY), in one explicit autocommit block.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field

from migrator.engine.steps import BackfillSpec, Doomed, Step
from migrator.errors import ValidationFailed
from migrator.strict import Strict

if TYPE_CHECKING:
    from migrator.engine.catalog import Catalog

Phase = Literal["expand", "contract"]
StepPhase = Literal["expand", "contract", "rollback"]
ChangeKind = Literal["add", "drop", "rename", "retype", "copy", "trigger"]


@dataclass(frozen=True)
class ChangedColumn:
    """One thing an operation does to a table's columns (`Operation.column_changes`).

    ``kind``: ``add``, ``drop``, ``rename`` (``detail`` says to what), ``retype``,
    ``copy`` (a one-time UPDATE of another column from this one), or ``trigger``: SQL
    written in the plan creates a trigger on the table (``column`` is None), which may
    carry writes between columns. ``synced``: True when migrator's own trigger keeps the
    old and the new column in step while both versions run; False when nothing does;
    None when only a trigger written in the plan's SQL could. ``schema`` None is the
    plan's schema. ``phase`` is when it happens.
    """

    table: str
    column: str | None
    kind: ChangeKind
    detail: str
    phase: Phase
    synced: bool | None = False
    schema: str | None = None


@dataclass
class Context:
    """What an operation may know while it builds statements."""

    schema: str
    release: str
    catalog: Catalog
    server_version: int = 180000
    notes: list[str] = field(default_factory=list)
    # What earlier operations of the same plan will create, so that validating a later
    # one (an index on a table the plan creates, a column of a new enum) does not refuse
    # it for being absent from the live catalog yet. Operations record it as they validate.
    planned_tables: dict[str, list[str]] = field(default_factory=dict)
    # Their columns' types (table -> column -> type as SQL: create_table's, then
    # add_column's), so an operator or expression can be tried on an empty copy.
    planned_table_types: dict[str, dict[str, str]] = field(default_factory=dict)
    planned_types: set[str] = field(default_factory=set)
    planned_relations: set[str] = field(default_factory=set)
    # Columns earlier operations add to tables that exist already (add_column, the new
    # name of rename_column): an index or constraint on them later in the plan is fine.
    planned_columns: dict[str, list[str]] = field(default_factory=dict)
    # Their types (table -> column -> type as SQL), so an expression over them is planned
    # against the live table with them added (`Catalog.expression_error`'s ``extra``).
    planned_column_types: dict[str, dict[str, str]] = field(default_factory=dict)
    # Constraint names earlier operations create, per table: a later one may not reuse them.
    planned_constraints: dict[str, set[str]] = field(default_factory=dict)
    # Generated columns earlier operations create, per table: another generated column
    # may not read them.
    planned_generated: dict[str, set[str]] = field(default_factory=dict)

    def plan_column(self, table: str, column: str, type_sql: str) -> None:
        """Record a column an operation adds to a table that exists already."""
        names = self.planned_columns.setdefault(table, [])
        if column not in names:
            names.append(column)
        self.planned_column_types.setdefault(table, {})[column] = type_sql

    def plan_constraint(self, table: str, name: str) -> None:
        """Record a constraint name an operation creates on a table."""
        self.planned_constraints.setdefault(table, set()).add(name)

    def constraint_taken(self, table: str, name: str) -> bool:
        """True when the table has the constraint, or an earlier operation creates it."""
        if name in self.planned_constraints.get(table, set()):
            return True
        if table in self.planned_tables:
            return False
        return self.catalog.constraint_exists(self.schema, table, name)

    def table_known(self, table: str) -> bool:
        """True when the table exists, or an earlier operation of the plan creates it.

        A live table is read-locked here (`Catalog.read_lock`), the first question an
        operation asks of it: later ones (defaults through pg_get_expr, counts, plans)
        take ACCESS SHARE on it too, and would otherwise wait without a bound or a name.
        """
        if table in self.planned_tables:
            return True
        if not self.catalog.table_exists(self.schema, table):
            return False
        self.catalog.read_lock(self.schema, table, rows=False)
        return True

    def column_names(self, table: str) -> list[str]:
        """The columns of a live or planned table."""
        if table in self.planned_tables:
            return self.planned_tables[table]
        live = [c.name for c in self.catalog.columns(self.schema, table)]
        return live + [c for c in self.planned_columns.get(table, []) if c not in live]

    def type_planned(self, type_sql: str) -> bool:
        """True when an earlier operation of the plan creates the type."""
        bare = type_sql.strip().removesuffix("[]").strip()
        return (
            bare in self.planned_types or bare.removeprefix(f"{self.schema}.") in self.planned_types
        )

    def type_known(self, type_sql: str) -> bool:
        """True when PostgreSQL knows the type, or an earlier operation creates it."""
        return self.type_planned(type_sql) or self.catalog.type_exists(type_sql)

    def relation_taken(self, name: str) -> bool:
        """True when a table, view, index or sequence of that name exists or is planned."""
        return (
            name in self.planned_relations
            or name in self.planned_tables
            or self.catalog.relation_kind(self.schema, name) is not None
        )


def _written_reason(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            "a suppressed lint finding needs a written reason, "
            'e.g. `lint: {ignore: {M001: "the table is empty until v2 ships"}}`'
        )
    return value


def _rule_id(value: Any) -> Any:
    if not isinstance(value, str) or not re.fullmatch(r"M[0-9]{3}", value):
        raise ValueError(f"{value!r} is no lint rule id; they look like M001 (docs/lint-rules.md)")
    return value


# The Field constraints only describe the keys in the JSON Schema (for editors); the
# validators before them give the clear messages.
LintRuleId = Annotated[str, BeforeValidator(_rule_id), Field(pattern=r"^M[0-9]{3}$")]
LintReason = Annotated[str, BeforeValidator(_written_reason), Field(min_length=1)]


class LintSettings(Strict):
    """``lint:`` on an operation: lint findings suppressed for it, each with its reason.

    The rule ids are those of docs/lint-rules.md; the lint refuses an unknown one.
    """

    ignore: dict[LintRuleId, LintReason] = Field(
        min_length=1,
        description="rule id -> why the finding is safe here (required, non-empty)",
    )


class Operation(Strict):
    """Base of every operation model. Subclasses set ``op_name`` and ``allowed``."""

    op_name: ClassVar[str]
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    where_it_belongs: ClassVar[str] = ""
    fills_before_switch: ClassVar[bool] = False
    """The new version reads what `backfills` fills as data it already has (the new
    name of a renamed column): no traffic moves to it before the fill is done."""

    lint: LintSettings | None = Field(
        default=None,
        description='suppress lint findings for this operation: {ignore: {M001: "reason"}}',
    )

    def describe(self) -> str:
        """A short human description, for step names and status."""
        return self.op_name

    def placement_error(self, phase: Phase) -> str | None:
        """Why this operation, with the keys it has, cannot stand under ``phase``, or None.

        By default it may stand where ``allowed`` says; an operation whose keys decide
        (drop_column with or without ``down``) says so here.
        """
        if phase in self.allowed:
            return None
        where = " or ".join(sorted(self.allowed))
        reason = f": {self.where_it_belongs}" if self.where_it_belongs else ""
        return f"{self.op_name} cannot stand under {phase}: (it belongs under {where}:){reason}"

    def validate_live(self, ctx: Context) -> None:
        """Check the operation against the live catalog (default: nothing to check)."""

    def expand(self, ctx: Context) -> Sequence[Step]:
        """The expand steps."""
        raise ValidationFailed(f"{self.op_name} cannot stand under expand: {self.where_it_belongs}")

    def backfills(self, ctx: Context) -> Sequence[BackfillSpec]:
        """Data left to fill in batches after the expand."""
        return ()

    def contract(self, ctx: Context) -> Sequence[Step]:
        """The contract steps (scheduled when the release completes)."""
        return ()

    def rollback(self, ctx: Context) -> Sequence[Step]:
        """Steps that undo the expand, in the order to run them."""
        return ()

    def column_changes(self) -> Sequence[ChangedColumn]:
        """What this operation does to columns, asked without a database.

        `migrator check` reads it to find the old version's writes that no trigger
        carries to the new version's column.
        """
        return ()

    def written_sql(self, phase: StepPhase) -> str | None:
        """SQL text the plan wrote for a phase and the operation runs as written (``sql``).

        None when the operation builds its statements itself. The lint points its
        findings at lines of this text.
        """
        return None

    def with_written_sql(self, phase: StepPhase, text: str) -> Operation:
        """A copy that runs ``text`` as the phase's SQL (for operations with `written_sql`)."""
        raise TypeError(f"{self.op_name} runs no SQL written in the plan")

    def doomed(self) -> Sequence[Doomed]:
        """What this operation's contract removes that the old version may still use.

        `migrator contract` refuses while pg_stat_statements shows queries since the
        release completed that read or write any of it.
        """
        return ()
