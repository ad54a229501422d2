"""The contract's swap of a shadowed `alter_column` (and of drop_constraint's form of it).

The shadow column, kept in step since the expand, takes the column's place: every
constraint is added again over it (NOT VALID, then validated in its own transaction),
foreign keys pointing at the column point at the shadow, and then one short transaction
drops the old column, renames the shadow in and puts back the default, NOT NULL, the
identity with its sequence (its grants and comment too), the primary key / unique
constraints (USING INDEX), the column's comment and privileges, and the index,
constraint and view names as they were. An incoming foreign key gets its name back
when the old one is dropped, in the same transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrator.engine.catalog_columns import (
    ColumnFacts,
    Grant,
    IndexFacts,
    column_constraints,
    dependent_views,
    grants_on,
    not_null_constraint,
    owned_sequence,
    relation_comment,
    sequence_facts,
)
from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context
from migrator.ops.expressions import default_sql
from migrator.ops.safe import (
    lock_referenced_sql,
    not_null_check_name,
    not_null_steps,
    validate_step,
)
from migrator.ops.shadow import (
    drop_sync_sql,
    renamed_constraint,
    renamed_references,
    restore_views_sql,
    save_and_drop_views_sql,
)
from migrator.pgtypes import INTEGER_BOUNDS, identity_type
from migrator.sqltext import dollar_quoted, ident, literal, short_name

if TYPE_CHECKING:
    from migrator.ops.alter_column import AlterColumn


def swap_steps(op: AlterColumn, ctx: Context, facts: ColumnFacts, drop_saved: str) -> list[Step]:
    """The contract of a shadowed change: constraints again over the shadow, then the swap."""
    cat = ctx.catalog
    t = ident(ctx.schema, op.table)
    col, shadow = op.column, op.shadow_name()
    mapping = {col: shadow}
    constraints = column_constraints(cat, facts)
    own = [c for c in constraints if not c.incoming and c.name != op.left_behind()]
    incoming = [c for c in constraints if c.incoming]
    indexes = op.kept_indexes(ctx, facts)
    views = dependent_views(cat, facts)
    sequence = owned_sequence(cat, ctx.schema, op.table, col)
    not_null = facts.not_null if op.nullable is None else not op.nullable
    # 0. The constraints the change adds, over the shadow (ops/alter_constraints.py).
    steps: list[Step] = op.tightening().steps(ctx, shadow)
    # 1. Every constraint again over the shadow: NOT VALID (brief lock, no scan),
    #    validated in its own transaction while reads and writes go on.
    for con in own:
        tmp = op.constraint_name(con.name)
        # A foreign key's referenced table first (safe.lock_referenced_sql).
        lock = (
            lock_referenced_sql(cat, con.ref_schema, con.ref_table)
            if con.ref_schema is not None and con.ref_table is not None
            else []
        )
        steps += [
            step(
                f"constraint-{con.name}",
                f"{con.name} again over {shadow}, NOT VALID",
                *lock,
                f"ALTER TABLE {t} ADD CONSTRAINT {ident(tmp)} "
                f"{renamed_constraint(con.definition, mapping)}",
            ),
            validate_step(f"validate-{con.name}", ctx.schema, op.table, tmp),
        ]
    if not_null:
        steps += not_null_steps(ctx.schema, op.table, shadow)[:2]
    # 2. Foreign keys pointing at the column point at the shadow too; the old ones go
    #    before the swap, each in its own transaction on its own table (the new one
    #    already guards the rows), and the new one takes its name in the same
    #    transaction: dropping a foreign key takes ACCESS EXCLUSIVE on both tables, and
    #    a rename of its own after the swap took the referencing table's once more.
    #    Each locks this table first, in the mode its statement takes here anyway:
    #    PostgreSQL takes the referencing table first, which stalled an application
    #    transaction that had written this table and then wrote the referencing one
    #    until the step's lock_timeout (safe.lock_referenced_sql).
    for con in incoming:
        tmp = op.constraint_name(con.name)
        ref = ident(con.schema, con.table)
        steps += [
            step(
                f"incoming-{con.name}",
                f"{con.table}.{con.name} again, referencing {shadow}, NOT VALID",
                *lock_referenced_sql(cat, ctx.schema, op.table),
                f"ALTER TABLE {ref} ADD CONSTRAINT {ident(tmp)} "
                f"{renamed_references(con.definition, mapping)}",
            ),
            validate_step(f"validate-incoming-{con.name}", con.schema, con.table, tmp),
            step(
                f"drop-incoming-{con.name}",
                f"{con.table}.{con.name} dropped, the new one takes its name",
                *lock_referenced_sql(cat, ctx.schema, op.table, "ACCESS EXCLUSIVE"),
                f"ALTER TABLE IF EXISTS {ref} DROP CONSTRAINT IF EXISTS {ident(con.name)}",
                f"ALTER TABLE IF EXISTS {ref} RENAME CONSTRAINT {ident(tmp)} TO {ident(con.name)}",
            ),
        ]
    # 3. The swap: one short transaction on the table (and the views over it). The
    #    views go first: a query on a view locks the view, then the table; taking the
    #    table first deadlocked with such a query waiting between the two.
    sqls = [save_and_drop_views_sql(ctx.schema, op.table, col)] if views else []
    #    The old column's foreign keys go with it, under ACCESS EXCLUSIVE on the tables
    #    they reference: those next, before this table (safe.lock_referenced_sql).
    sqls += [
        sql
        for target in sorted(
            {
                (c.ref_schema, c.ref_table)
                for c in constraints
                if not c.incoming and c.ref_schema is not None and c.ref_table is not None
            }
            - {(ctx.schema, op.table)}
        )
        for sql in lock_referenced_sql(cat, *target, "ACCESS EXCLUSIVE")
    ]
    sqls += drop_sync_sql(ctx.schema, op.table, op.trigger_name(), op.function_name(ctx))
    if sequence and not facts.identity:
        sqls.append(f"ALTER SEQUENCE {sequence} OWNED BY {t}.{ident(shadow)}")
    if not_null:
        # Still under the shadow's name, which the validated check names: no scan.
        sqls += [
            f"ALTER TABLE {t} ALTER COLUMN {ident(shadow)} SET NOT NULL",
            f"ALTER TABLE {t} DROP CONSTRAINT {ident(not_null_check_name(op.table, shadow))}",
        ]
    if facts.identity and sequence:
        sqls += _identity_swap(op, ctx, facts, sequence)
    sqls.append(f"ALTER TABLE {t} DROP COLUMN {ident(col)}")
    sqls.append(f"ALTER TABLE {t} RENAME COLUMN {ident(shadow)} TO {ident(col)}")
    # Column privileges (GRANT SELECT (col)) went with the old column; the shadow's own
    # (given by the expand, maybe since changed on the column) make way for them.
    sqls += revoke_sql(grants_on(cat, t, shadow), f"TABLE {t}", col)
    sqls += grant_sql(grants_on(cat, t, col), f"TABLE {t}", col)
    if not_null:
        # PostgreSQL 18 names the NOT NULL constraint after the shadow; give it the
        # column's own name back (a no-op before 18, where NOT NULL has no name).
        sqls.append(
            "DO "
            + dollar_quoted(
                _NOT_NULL_NAME
                % {
                    "table": literal(t),
                    "column": literal(col),
                    "name": literal(
                        not_null_constraint(ctx.catalog, facts) or f"{op.table}_{col}_not_null"
                    ),
                }
            )
        )
    default = default_sql(op.default) if op.default is not None else facts.default
    if default is not None and not op.drops_default():
        sqls.append(f"ALTER TABLE {t} ALTER COLUMN {ident(col)} SET DEFAULT {default}")
    sqls += _restore_indexes(op, ctx, indexes)
    sqls += [
        f"ALTER TABLE {t} RENAME CONSTRAINT {ident(op.constraint_name(c.name))} TO {ident(c.name)}"
        for c in own
    ]
    if facts.comment is not None:
        sqls.append(f"COMMENT ON COLUMN {t}.{ident(col)} IS {literal(facts.comment)}")
    if views:
        sqls.append(restore_views_sql())
    sqls.append(drop_saved)
    what = f"the {op.type} column" if op.type is not None else "the rewritten column"
    steps.append(step("swap", f"{op.table}.{col} becomes {what}", *sqls))
    return steps


def _identity_swap(op: AlterColumn, ctx: Context, facts: ColumnFacts, sequence: str) -> list[str]:
    """The shadow becomes the identity column, its sequence where the old one was.

    An identity sequence belongs to its column (PostgreSQL will not give it to
    another) and goes when the column is dropped; so the old one steps aside under
    another name, the shadow gets a sequence of the old one's name and options
    (GENERATED ALWAYS or BY DEFAULT as before), set to the old one's value, and the
    old one goes with the old column. All under the swap's ACCESS EXCLUSIVE lock, so
    no insert draws a value in between: the next insert gets the next value.
    """
    seq = sequence_facts(ctx.catalog, sequence)
    if seq is None:
        raise ValidationFailed(f"{op.where()}: the identity sequence {sequence} is gone")
    t = ident(ctx.schema, op.table)
    aside = short_name(seq.name, prefix="_migrator_old_")
    old_type = identity_type(seq.type) or "int8"
    low, high = INTEGER_BOUNDS[old_type]
    ascending = seq.increment > 0
    # A bound that was the old type's default becomes the new type's default, as
    # ALTER COLUMN ... TYPE does to an identity's sequence; one set by hand stays.
    default_min, default_max = (1, high) if ascending else (low, -1)
    options = [
        f"SEQUENCE NAME {ident(seq.schema, seq.name)}",
        f"START WITH {seq.start}",
        f"INCREMENT BY {seq.increment}",
        "NO MINVALUE" if seq.minvalue == default_min else f"MINVALUE {seq.minvalue}",
        "NO MAXVALUE" if seq.maxvalue == default_max else f"MAXVALUE {seq.maxvalue}",
        f"CACHE {seq.cache}",
        "CYCLE" if seq.cycle else "NO CYCLE",
    ]
    kind = "ALWAYS" if facts.identity == "a" else "BY DEFAULT"
    name = ident(seq.schema, seq.name)
    sqls = [
        f"ALTER SEQUENCE {name} RENAME TO {ident(aside)}",
        f"ALTER TABLE {t} ALTER COLUMN {ident(op.shadow_name())} "
        f"ADD GENERATED {kind} AS IDENTITY ({' '.join(options)})",
        f"SELECT setval({literal(name)}, last_value, is_called) FROM {ident(seq.schema, aside)}",
    ]
    # The roles that may draw from it (USAGE for an insert as them) and its comment,
    # as the old one had them.
    sqls += grant_sql(grants_on(ctx.catalog, sequence), f"SEQUENCE {name}")
    comment = relation_comment(ctx.catalog, sequence)
    if comment is not None:
        sqls.append(f"COMMENT ON SEQUENCE {name} IS {literal(comment)}")
    return sqls


def _grantee(grant: Grant) -> str:
    return "PUBLIC" if grant.grantee is None else ident(grant.grantee)


def _as(grantor: str | None, sql: str) -> list[str]:
    """``sql`` run as ``grantor`` (None: as migrator's own role)."""
    if grantor is None:
        return [sql]
    return [f"SET LOCAL ROLE {ident(grantor)}", sql, "RESET ROLE"]


def grant_sql(grants: list[Grant], on: str, column: str | None = None) -> list[str]:
    """GRANT statements giving ``grants`` again on ``on`` (``TABLE t`` with a column:
    column privileges; ``SEQUENCE s``), each recorded with its grantor where PostgreSQL
    lets migrator do so.

    GRANTED BY cannot do it: on 15 and 18 it takes the current user only ("grantor must
    be current user"). A GRANT made as the grantor (SET LOCAL ROLE) records it, where
    migrator's role may become that role and the role holds the grant option there by
    then: on the whole table, or given just before (the owner's grants first, then each
    role's once its own option is given). PostgreSQL answers a GRANT without the grant
    option with a warning, not an error, so a grant whose grantor would not hold it is
    made as migrator's role instead, recorded as the owner's, as are the others.
    """
    columns = "" if column is None else f" ({ident(column)})"
    held = {(g.grantor, g.privilege) for g in grants if g.table_option}
    pending = list(grants)
    sqls: list[str] = []
    while pending:
        ready = [
            g
            for g in pending
            if g.grantor is None or not g.becomable or (g.grantor, g.privilege) in held
        ] or pending[:1]
        for g in ready:
            mine = g.becomable and (g.grantor, g.privilege) in held
            sqls += _as(
                g.grantor if mine else None,
                f"GRANT {g.privilege}{columns} ON {on} TO {_grantee(g)}"
                + (" WITH GRANT OPTION" if g.grantable else ""),
            )
            if g.grantable:
                held.add((g.grantee, g.privilege))
            pending.remove(g)
    return sqls


def revoke_sql(grants: list[Grant], on: str, column: str) -> list[str]:
    """REVOKE ALL on a column from the grantees of ``grants``, each as the role that
    granted it where migrator's role may become it (a REVOKE takes back only the
    revoker's own grants), and the grants that rest on another's grant option first (the
    option's REVOKE fails while they stand)."""
    pending = list(grants)
    sqls: list[str] = []
    while pending:
        grantors = {g.grantor for g in pending if g.grantor is not None}
        ready = [g for g in pending if g.grantee not in grantors] or pending
        for grantor, grantee in dict.fromkeys(
            (g.grantor if g.becomable else None, _grantee(g)) for g in ready
        ):
            sqls += _as(grantor, f"REVOKE ALL ({ident(column)}) ON {on} FROM {grantee}")
        pending = [g for g in pending if g not in ready]
    return sqls


def _restore_indexes(op: AlterColumn, ctx: Context, indexes: list[IndexFacts]) -> list[str]:
    t = ident(ctx.schema, op.table)
    sqls = []
    for index in indexes:
        copy = ident(op.index_name(index.name))
        if index.constraint is not None:
            kind = "PRIMARY KEY" if index.constraint_kind == "p" else "UNIQUE"
            sqls.append(
                f"ALTER TABLE {t} ADD CONSTRAINT {ident(index.constraint)} {kind} "
                f"USING INDEX {copy}"
            )
            if index.constraint != index.name:
                sqls.append(
                    f"ALTER INDEX {ident(ctx.schema, index.constraint)} "
                    f"RENAME TO {ident(index.name)}"
                )
        else:
            sqls.append(
                f"ALTER INDEX {ident(ctx.schema, op.index_name(index.name))} "
                f"RENAME TO {ident(index.name)}"
            )
    return sqls


_NOT_NULL_NAME = """
DECLARE
  current_name text;
BEGIN
  SELECT k.conname INTO current_name FROM pg_constraint k
  JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
  WHERE k.conrelid = to_regclass(%(table)s) AND k.contype = 'n' AND a.attname = %(column)s;
  IF current_name IS NOT NULL AND current_name <> %(name)s THEN
    EXECUTE format('ALTER TABLE %%s RENAME CONSTRAINT %%I TO %%I', %(table)s, current_name,
                   %(name)s);
  END IF;
END
"""
