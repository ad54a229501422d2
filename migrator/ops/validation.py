"""Validation against the live catalog, shared by the operations.

Every refusal is a `ValidationFailed` (exit 2) with one line that names the operation and
the object at fault, raised before anything runs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from migrator.errors import ValidationFailed
from migrator.ops.base import Context
from migrator.ops.expressions import column_refs
from migrator.ops.safe import is_ours

if TYPE_CHECKING:
    from migrator.engine.catalog import IndexInfo


def require_table(ctx: Context, where: str, table: str) -> None:
    """Refuse a table that neither exists nor is created earlier in the plan."""
    if not ctx.table_known(table):
        raise ValidationFailed(f"{where}: table {ctx.schema}.{table} does not exist")


def require_columns(ctx: Context, where: str, table: str, columns: Sequence[str]) -> None:
    """Refuse columns the table does not have."""
    have = ctx.column_names(table)
    missing = [c for c in columns if c not in have]
    if missing:
        word = "column" if len(missing) == 1 else "columns"
        raise ValidationFailed(f"{where}: {ctx.schema}.{table} has no {word} {', '.join(missing)}")


def expression_columns(
    where: str, expression: str, columns: Collection[str], lacking: str
) -> list[str]:
    """The columns ``expression`` reads, all of them in ``columns``; refused in one line
    when it does not parse, or naming those it reads that are not there (``lacking``
    says why they cannot be: "which users does not have")."""
    try:
        refs = column_refs(expression)
    except ValueError as exc:
        raise ValidationFailed(f"{where}: {exc}") from None
    unknown = [r for r in refs if r not in columns]
    if unknown:
        raise ValidationFailed(f"{where} reads {', '.join(unknown)}, {lacking}")
    return refs


def require_expression(
    ctx: Context, where: str, table: str, expression: str, cast_to: str | None = None
) -> None:
    """Refuse an SQL expression over the table that does not parse or does not plan."""
    try:
        refs = column_refs(expression)
    except ValueError as exc:
        raise ValidationFailed(f"{where}: {exc}") from None
    if table in ctx.planned_tables:
        missing = [r for r in refs if r not in ctx.planned_tables[table]]
        if missing:
            raise ValidationFailed(
                f"{where}: {expression!r} reads {', '.join(missing)}, which {table} will not have"
            )
        return
    extra = ctx.planned_column_types.get(table, {})
    if any(ctx.type_planned(t) for t in extra.values()):
        # A column of a type the plan creates cannot be tried on the live table; the
        # expand's transaction tries the expression for real.
        missing = [r for r in refs if r not in ctx.column_names(table)]
        if missing:
            raise ValidationFailed(
                f"{where}: {expression!r} reads {', '.join(missing)}, which {table} will not have"
            )
        return
    problem = ctx.catalog.expression_error(ctx.schema, table, expression, cast_to, extra)
    if problem:
        raise ValidationFailed(f"{where}: {expression!r} does not work on {table}: {problem}")


def refuse_index_name_taken(
    ctx: Context, where: str, table: str, name: str, *, unbound: bool = False
) -> IndexInfo | None:
    """Refuse index ``name`` when anything holds that name but an earlier build of this
    very index on ``table``: a failed one (INVALID), which the build drops and builds
    again, or a valid one marked as this release's (`is_ours`), built but not recorded,
    which it keeps. With ``unbound`` that build has no constraint yet (one made a
    constraint USING INDEX is someone else's). The index found, if any."""
    existing = ctx.catalog.index(ctx.schema, name)
    if existing is not None and not (
        existing.table == table
        and (not unbound or existing.constraint is None)
        and (not existing.valid or is_ours(existing, table, ctx.release))
    ):
        raise ValidationFailed(f"{where}: an index named {name} already exists on {existing.table}")
    if existing is None and ctx.relation_taken(name):
        raise ValidationFailed(f"{where}: a relation named {ctx.schema}.{name} already exists")
    return existing


def refuse_constraint_clash(ctx: Context, where: str, table: str, name: str) -> None:
    """Refuse a constraint name the table uses or an earlier operation creates; the
    name is then recorded as planned, for the operations after this one."""
    if ctx.constraint_taken(table, name):
        raise ValidationFailed(f"{where}: {table} already has a constraint named {name}")
    ctx.plan_constraint(table, name)


def refuse_dependants(where: str, what: str, dependants: Sequence[str]) -> None:
    """Refuse a drop that other objects rely on, naming them; never CASCADE."""
    if dependants:
        raise ValidationFailed(
            f"{where}: {', '.join(dependants)} depend{'s' if len(dependants) == 1 else ''} "
            f"on {what}; drop or change {'it' if len(dependants) == 1 else 'them'} first "
            "(migrator never drops with CASCADE)"
        )


def refuse_duplicates(ctx: Context, where: str, table: str, columns: Sequence[str]) -> None:
    """Refuse a unique index over data that already holds duplicates, saying which."""
    if table in ctx.planned_tables:
        return
    if set(columns) & set(ctx.planned_columns.get(table, [])):
        return  # a column the plan adds holds no values yet (the index build would fail)
    count, sample = ctx.catalog.duplicates(ctx.schema, table, list(columns))
    if count:
        shown = "; ".join(f"({value}) in {rows} rows" for value, rows in sample)
        more = f" and {count - len(sample)} more" if count > len(sample) else ""
        raise ValidationFailed(
            f"{where}: {count} value{'s' if count != 1 else ''} of ({', '.join(columns)}) in "
            f"{table} occur{'s' if count == 1 else ''} more than once: {shown}{more}; "
            "remove the duplicates first"
        )
