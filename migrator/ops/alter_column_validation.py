"""`alter_column`'s validation: the plan's keys held against the live column.

What the change asks for must make sense together (``up`` / ``down`` only with a type
change or a tightening), and against the catalog: a known type that differs from the
column's, nothing that depends on the column in a way the chosen route (in place, or a
shadow column) cannot carry over, and ``up`` / ``down`` / the default as working SQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrator.engine.catalog_columns import (
    ColumnFacts,
    column_constraints,
    dependent_views,
    exclusion_constraints,
    expression_error_with,
    generated_readers,
    other_dependants,
)
from migrator.errors import ValidationFailed
from migrator.ops.base import Context
from migrator.ops.expressions import default_sql
from migrator.ops.validation import require_expression, require_table
from migrator.pgtypes import identity_type, rewrites

if TYPE_CHECKING:
    from migrator.ops.alter_column import AlterColumn


def validate(op: AlterColumn, ctx: Context) -> None:
    """Raise ValidationFailed, naming the operation, for a change that cannot be done."""
    where = op.where()
    cat = ctx.catalog
    require_table(ctx, where, op.table)
    facts = op.facts(ctx)
    given = [
        k
        for k in ("type", "nullable", "default", "check", "unique", "references")
        if getattr(op, k) is not None
    ] + [k for k, on in (("default", op.drops_default()), ("comment", op.sets_comment())) if on]
    if op.rewrites_data() and not op.tightens() and op.left_behind() is None:
        raise ValidationFailed(
            f"{where}: up and down go with a type change (type:) or a tightening "
            "(nullable: false, check, unique, references)"
        )
    if not given and op.left_behind() is None:
        raise ValidationFailed(
            f"{where}: nothing to change; give type, nullable, default, check, unique, "
            "references or comment"
        )
    if op.type is not None:
        _validate_type(op, ctx, facts)
    elif op.rewrites_data():
        _validate_shadow(op, ctx, facts)
    if op.nullable is True and facts.not_null:
        if op.column in cat.primary_key(ctx.schema, op.table):
            raise ValidationFailed(
                f"{where}: {op.column} is in the primary key and cannot be nullable"
            )
    final_type = op.type or facts.type
    if op.drops_default() and (facts.identity or facts.generated):
        kind = "an identity" if facts.identity else "a generated"
        raise ValidationFailed(
            f"{where}: {op.column} is {kind} column, which has no default to drop"
        )
    if op.default is not None:
        require_expression(ctx, where, op.table, default_sql(op.default), final_type)
    if op.default is not None and (facts.identity or facts.generated):
        kind = "an identity" if facts.identity else "a generated"
        raise ValidationFailed(
            f"{where}: {op.column} is {kind} column; PostgreSQL gives it no default"
        )
    # With a shadow column the constraints land on it: on its values as `up` (or the
    # cast) gives them, and of its type.
    shadowed = op.shadowed(ctx)
    retyped = op.changes_type(facts)
    if shadowed and cat.domain_not_null(final_type):
        # The shadow column is NULL until the backfill: PostgreSQL refuses adding it to
        # a table with rows, and every old INSERT (the domain is checked before the
        # sync trigger could fill it).
        raise ValidationFailed(
            f"{where}: {final_type} is a domain that does not allow NULL, and the change "
            f"goes through a shadow column, which is NULL until the backfill fills it "
            "(PostgreSQL would refuse adding it, and every old INSERT); use a domain "
            "without NOT NULL and `nullable: false`"
        )
    op.tightening().validate(
        ctx,
        where,
        up=op.up_sql() if shadowed else None,
        column_type=final_type,
        retyped=retyped,
    )


def _validate_type(op: AlterColumn, ctx: Context, facts: ColumnFacts) -> None:
    where = op.where()
    assert op.type is not None
    if not ctx.catalog.type_exists(op.type):
        raise ValidationFailed(f"{where}: unknown type {op.type!r}")
    if not op.changes_type(facts):
        raise ValidationFailed(f"{where}: the column already has type {facts.type}")
    readers = generated_readers(ctx.catalog, facts)
    if readers:
        raise ValidationFailed(
            f"{where}: generated column {', '.join(readers)} reads {op.column}; "
            "PostgreSQL cannot change the type of a column a generated column uses: drop "
            "the generated column first (or add a new column and move to it)"
        )
    if facts.identity and identity_type(op.type) is None:
        raise ValidationFailed(
            f"{where}: {op.column} is an identity column; {op.type} cannot be one "
            "(only smallint, integer and bigint can)"
        )
    views = dependent_views(ctx.catalog, facts)
    materialized = [f"{v.schema}.{v.name}" for v in views if v.kind == "m"]
    if materialized:
        raise ValidationFailed(
            f"{where}: materialized view {', '.join(materialized)} uses the column; "
            "a type change would have to rebuild it; drop it first"
        )
    if facts.generated:
        spelled = ctx.catalog.type_spelling(op.type)
        if spelled is None or rewrites(facts.type, spelled) is not False:
            ctx.notes.append(
                f"{where}: {op.column} is a generated column: PostgreSQL recomputes it "
                f"as {op.type} for every row, a table rewrite under ACCESS EXCLUSIVE "
                "(LINT rule M016); the lock-safe way is a new plain column with `up` "
                "(add_column) and the generated one dropped in the contract"
            )
        if op.up is not None or op.down is not None:
            raise ValidationFailed(
                f"{where}: {op.column} is a generated column; its expression gives "
                "its values, so up and down do not apply"
            )
        return
    if op.in_place(ctx, facts):
        if op.up is not None or op.down is not None:
            ctx.notes.append(
                f"{where}: {facts.type} to {op.type} is binary-coercible and done in "
                "place; up and down are not needed and not used"
            )
        return
    _validate_shadow(op, ctx, facts)


def _validate_shadow(op: AlterColumn, ctx: Context, facts: ColumnFacts) -> None:
    """What a shadow column (of the new type, or of the same for the constraint form)
    cannot carry over, and the ``up`` / ``down`` expressions."""
    where = op.where()
    new_type = op.shadow_type(facts)
    if facts.relkind == "p":
        raise ValidationFailed(
            f"{where}: {op.table} is partitioned; indexes cannot be built concurrently "
            "on a partitioned table, so a shadow column for this change is not supported "
            "there yet"
        )
    if facts.generated:
        raise ValidationFailed(
            f"{where}: {op.column} is a generated column; its expression gives its "
            "values, so it cannot be changed through a shadow column"
        )
    if ctx.catalog.column(ctx.schema, op.table, op.shadow_name()) is not None:
        raise ValidationFailed(f"{where}: column {op.shadow_name()} already exists in {op.table}")
    if ctx.server_version < 180000:
        # PostgreSQL 18 first allows a NOT VALID foreign key on a partitioned table.
        parted = [
            f"{c.table}.{c.name}"
            for c in column_constraints(ctx.catalog, facts)
            if c.incoming and ctx.catalog.relation_kind(c.schema, c.table) == "p"
        ]
        if parted:
            raise ValidationFailed(
                f"{where}: foreign key {', '.join(parted)} on a partitioned table points "
                "at the column; PostgreSQL before 18 cannot re-create it NOT VALID, so "
                "the type cannot be changed without a long lock there"
            )
    excluding = ", ".join(exclusion_constraints(ctx.catalog, facts))
    if excluding:
        raise ValidationFailed(
            f"{where}: exclusion constraint {excluding} uses the column; it cannot be "
            "added without a long lock (LINT rule 25), so the type cannot be swapped"
        )
    others = other_dependants(ctx.catalog, facts)
    if others:
        raise ValidationFailed(
            f"{where}: {', '.join(others)} depend{'s' if len(others) == 1 else ''} on the "
            "column and cannot be carried over to the new type; drop or change "
            f"{'it' if len(others) == 1 else 'them'} first"
        )
    require_expression(ctx, f"{where}: up", op.table, op.up_sql(), new_type)
    # Columns earlier operations of the plan add are there for `down` to read; one of
    # a type the plan creates cannot be tried here (the expand's transaction tries it).
    extra = ctx.planned_column_types.get(op.table, {})
    problem = (
        None
        if any(ctx.type_planned(t) for t in extra.values())
        else expression_error_with(
            ctx.catalog,
            ctx.schema,
            op.table,
            op.down_sql(facts.type),
            facts.type,
            op.column,
            new_type,
            extra,
        )
    )
    if problem:
        raise ValidationFailed(
            f"{where}: down {op.down_sql(facts.type)!r} does not work on {op.table} "
            f"(its {op.column} being {new_type}): {problem}"
        )
