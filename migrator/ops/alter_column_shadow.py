"""`alter_column`'s shadow-column route: the expand's, the backfill's and the rollback's part.

A change that would rewrite the table (or ``up`` rewriting values for new constraints)
gets a shadow column of the new type, kept in step both ways by the sync trigger
(ops/shadow.py), with copies of the column's indexes built concurrently over it; the
backfill fills it on existing rows; the rollback drops it. The contract's swap is
ops/column_swap.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrator.engine.catalog_columns import ColumnFacts, grants_on, types_without_equality
from migrator.engine.steps import BackfillSpec, Step, step
from migrator.ops.base import Context
from migrator.ops.column_swap import grant_sql
from migrator.ops.shadow import ShadowSync, drop_sync_sql, shadow_index_steps, sync_trigger_step
from migrator.sqltext import ident

if TYPE_CHECKING:
    from migrator.ops.alter_column import AlterColumn


def shadow_steps(op: AlterColumn, ctx: Context, facts: ColumnFacts) -> list[Step]:
    """The expand: the shadow column, its sync trigger and its copies of the indexes."""
    new_type = op.shadow_type(facts)
    t = ident(ctx.schema, op.table)
    shadow = op.shadow_name()
    ctx.notes.append(
        f"{op.where()}: {shadow} (the {new_type} column) is NULL on existing rows until "
        "the backfill fills it; if the new version reads it, backfill before the switch "
        "(backfill: {when: before_switch})"
    )
    types = {c.name: c.type for c in ctx.catalog.columns(ctx.schema, op.table)}
    function = op.function_name(ctx)
    steps = [
        step(
            "add-shadow",
            f"add {op.table}.{shadow} of type {new_type}",
            f"ALTER TABLE {t} ADD COLUMN {ident(shadow)} {new_type}",
            # A role granted the column alone (GRANT SELECT (col)) gets the shadow
            # too, so the new version may use it; the swap grants them again.
            *grant_sql(grants_on(ctx.catalog, t, op.column), f"TABLE {t}", shadow),
        ),
        sync_trigger_step(
            "sync-trigger",
            f"trigger keeping {op.table}.{op.column} and {shadow} in step",
            ctx.schema,
            op.table,
            op.trigger_name(),
            function,
            ShadowSync(
                column=op.column,
                shadow=shadow,
                shadow_type=new_type,
                up=op.up_sql(),
                down=op.down_sql(facts.type),
                column_types=types,
                no_equality=types_without_equality(ctx.catalog, [*types.values(), new_type]),
            ),
        ),
    ]
    steps += shadow_index_steps(
        "index",
        ctx.schema,
        op.table,
        op.kept_indexes(ctx, facts),
        {op.column: shadow},
        op.index_name,
    )
    return steps


def shadow_backfill(op: AlterColumn, ctx: Context) -> BackfillSpec:
    """The backfill: ``up`` of the column into the shadow, on the rows it has not reached."""
    shadow = op.shadow_name()
    return BackfillSpec(
        key="backfill",
        schema=ctx.schema,
        table=op.table,
        set={shadow: op.up_sql()},
        needs=f"{ident(shadow)} IS NULL",
        description=f"fill {op.table}.{shadow} from {op.column}",
    )


def drop_shadow_step(op: AlterColumn, ctx: Context) -> Step:
    """The rollback: the shadow column, its trigger and (with it) its index copies go."""
    shadow = op.shadow_name()
    return step(
        "drop-shadow",
        f"drop {op.table}.{shadow}, its trigger and index copies",
        *drop_sync_sql(ctx.schema, op.table, op.trigger_name(), op.function_name(ctx)),
        f"ALTER TABLE {ident(ctx.schema, op.table)} DROP COLUMN IF EXISTS {ident(shadow)}",
    )
