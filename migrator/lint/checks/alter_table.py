"""ALTER TABLE: constraints, NOT NULL, drops and partitions, one subcommand at a time.

Rules M005..M010, M014, M015, M021, M022 (foreign keys), M025 and M027, and M030 for
ADD COLUMN, ADD CONSTRAINT, DROP COLUMN and DROP CONSTRAINT; ADD COLUMN and ALTER COLUMN TYPE are judged in `columns`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pglast import ast, enums

from migrator.lint.checks.columns import add_column, alter_type, key_columns, key_type_rules
from migrator.lint.checks.indexes import report_duplicates
from migrator.lint.model import (
    LintPhase,
    Stmt,
    Unit,
    UnitState,
    names,
    null_test_column,
    quote,
    rel,
)
from migrator.lint.registry import on

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType


@on(ast.AlterTableStmt)
def alter_table(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Each subcommand of an ALTER TABLE on a table, in order."""
    node = stmt.node
    assert isinstance(node, ast.AlterTableStmt)
    if node.relation is None or node.objtype != OT.OBJECT_TABLE:
        return
    table = rel(node.relation)
    schema = node.relation.schemaname or a.schema
    for cmd in node.cmds or ():
        if isinstance(cmd, ast.AlterTableCmd):
            subcommand(a, stmt, unit, state, phase, schema, table, cmd)


def subcommand(
    a: Analyzer,
    stmt: Stmt,
    unit: Unit,
    state: UnitState,
    phase: LintPhase | None,
    schema: str,
    table: str,
    cmd: ast.AlterTableCmd,
) -> None:
    """One subcommand of ALTER TABLE."""
    new = a.new(table)
    sub = cmd.subtype
    if sub == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        add_column(a, stmt, unit, schema, table, cmd.def_, new)
        if not unit.transactional and not cmd.missing_ok:
            a.not_rerunnable(stmt, "ADD COLUMN without IF NOT EXISTS")
    elif sub == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        add_constraint(a, stmt, state, schema, table, cmd.def_, new)
        name = cmd.def_.conname or ""
        if not unit.transactional and not constraint_dropped_before(a, stmt, table, cmd):
            a.not_rerunnable(
                stmt,
                f"ADD CONSTRAINT {name} fails on a rerun (the constraint exists)"
                if name
                else "ADD CONSTRAINT with no name adds a second copy on a rerun",
            )
    elif sub == AT.AT_ValidateConstraint:
        validate_constraint(a, stmt, state, table, cmd.name or "")
    elif sub == AT.AT_SetNotNull:
        set_not_null(a, stmt, schema, table, cmd.name or "", new)
    elif sub == AT.AT_DropNotNull:
        column = cmd.name or ""
        if not new and (table, column) not in a.tracker.columns:
            a.report(
                "M015",
                stmt,
                f"DROP NOT NULL on {table}.{column}: the old version may now read NULLs",
            )
    elif sub == AT.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
        alter_type(a, stmt, schema, table, cmd.name or "", cmd.def_, new)
    elif sub == AT.AT_DropColumn:
        drop_column(a, stmt, state, table, cmd.name or "", new, phase)
        if not unit.transactional and not cmd.missing_ok:
            a.not_rerunnable(stmt, f"DROP COLUMN {cmd.name} without IF EXISTS")
    elif sub == AT.AT_DropConstraint:
        drop_constraint(a, stmt, schema, table, cmd.name or "", new, phase)
        a.tracker.dropped_constraints.add((table, cmd.name or ""))
        a.tracker.foreign_key_targets.pop((table, cmd.name or ""), None)
        a.tracker.foreign_key_columns.pop((table, cmd.name or ""), None)
        if not unit.transactional and not cmd.missing_ok:
            a.not_rerunnable(stmt, f"DROP CONSTRAINT {cmd.name} without IF EXISTS")
    elif sub in (AT.AT_AttachPartition, AT.AT_DetachPartition):
        partition(a, stmt, unit, table, cmd, new)


def constraint_dropped_before(a: Analyzer, stmt: Stmt, table: str, cmd: ast.AlterTableCmd) -> bool:
    """True when a DROP CONSTRAINT IF EXISTS of the same name comes before the ADD, in the
    same statement or earlier in the same operation: then the ADD reruns cleanly."""
    con = cmd.def_
    name = con.conname if isinstance(con, ast.Constraint) else None
    if not name:
        return False
    for other in [*a.earlier(stmt), stmt]:
        node = other.node
        if not isinstance(node, ast.AlterTableStmt) or rel(node.relation) != table:
            continue
        for earlier in node.cmds or ():
            if earlier is cmd:
                return False
            if (
                isinstance(earlier, ast.AlterTableCmd)
                and earlier.subtype == AT.AT_DropConstraint
                and earlier.missing_ok
                and earlier.name == name
            ):
                return True
    return False


def validate_constraint(a: Analyzer, stmt: Stmt, state: UnitState, table: str, name: str) -> None:
    """Rule 7: VALIDATE in the transaction that added the constraint NOT VALID."""
    if (table, name) in state.added:
        a.report(
            "M007",
            stmt,
            f"validates {name} in the transaction that added it: the ADD's lock is "
            "held through the scan",
        )
    column = a.tracker.not_null_checks.get((table, name))
    if column is not None:
        a.tracker.validated_not_null.add((table, column))
    a.tracker.validated_tables.add(table)
    a.tracker.validated_constraints.add((table, name))


def leaves_hold_it(a: Analyzer, schema: str, table: str, held: Callable[[str], bool]) -> bool:
    """True for a partitioned table each of whose leaf partitions got, earlier in the
    unit, what ``held`` asks: PostgreSQL then attaches theirs (no build, no scan)."""
    if a.live is None or not a.live.partitioned(schema, table):
        return False
    leaves = a.live.leaf_partitions(schema, table)
    return bool(leaves) and all(held(leaf) for leaf in leaves or [])


def partition(
    a: Analyzer, stmt: Stmt, unit: Unit, table: str, cmd: ast.AlterTableCmd, new: bool
) -> None:
    """Rule 27: ATTACH without a validated CHECK, DETACH without CONCURRENTLY (and M003)."""
    if not isinstance(cmd.def_, ast.PartitionCmd):
        return
    part = cmd.def_.name.relname if cmd.def_.name is not None else ""
    if cmd.subtype == AT.AT_AttachPartition:
        if not new and part not in a.tracker.validated_tables and not a.new(part):
            a.report(
                "M027",
                stmt,
                f"ATTACH PARTITION {part} scans it to prove the bound, locking it and "
                f"{table}: add a matching CHECK (NOT VALID, then VALIDATE) first",
                "warning",
            )
        return
    if not cmd.def_.concurrent and not new:
        note = "" if a.version >= 140000 else " (CONCURRENTLY needs PostgreSQL 14)"
        a.report(
            "M027",
            stmt,
            f"DETACH PARTITION {part} takes ACCESS EXCLUSIVE on {table}{note}",
        )
    elif cmd.def_.concurrent and a.version < 140000:
        a.report(
            "M027",
            stmt,
            f"DETACH PARTITION ... CONCURRENTLY needs PostgreSQL 14 (server "
            f"{a.version // 10000}): the statement fails",
        )
    elif cmd.def_.concurrent and unit.transactional:
        a.report("M003", stmt, "DETACH PARTITION CONCURRENTLY inside a transaction fails")


def add_constraint(
    a: Analyzer,
    stmt: Stmt,
    state: UnitState,
    schema: str,
    table: str,
    con: ast.Constraint,
    new: bool,
) -> None:
    """Rules 5, 6, 8, 9, 10, 14 and 25 for ADD CONSTRAINT."""
    name = con.conname or ""
    if con.skip_validation:
        state.added.add((table, name))
    if con.contype == CT.CONSTR_CHECK:
        column = null_test_column(con.raw_expr)
        if column is not None:
            a.tracker.not_null_checks[(table, name)] = column
            if not con.skip_validation:
                a.tracker.validated_not_null.add((table, column))
        if not con.skip_validation:
            a.tracker.validated_tables.add(table)
    a.tracker.dropped_constraints.discard((table, name))
    if con.contype == CT.CONSTR_FOREIGN:
        a.tracker.foreign_keys.add((table, name))
        if con.pktable is not None:
            a.tracker.foreign_key_targets[(table, name)] = (
                con.pktable.schemaname or a.schema,
                rel(con.pktable),
            )
            a.tracker.foreign_key_columns[(table, name)] = tuple(names(con.fk_attrs))
        if not con.skip_validation:
            a.tracker.validated_constraints.add((table, name))
    if con.contype == CT.CONSTR_UNIQUE:
        a.tracker.unique_tables.add(table)
    if con.contype == CT.CONSTR_PRIMARY:
        a.tracker.primary_tables.add(table)
    # Only the key columns the plan or file adds are judged.
    added = [k for k in key_columns([], [con]) if (table, k[0]) in a.tracker.columns]
    key_type_rules(a, stmt, table, added)
    if new:
        return
    keys = names(con.keys)
    if con.contype == CT.CONSTR_FOREIGN and not con.skip_validation:
        ref = con.pktable.relname if con.pktable is not None else "?"
        if leaves_hold_it(
            a, schema, table, lambda leaf: (leaf, name) in a.tracker.validated_constraints
        ):
            return  # it attaches each leaf's validated key: no scan
        a.report(
            "M005",
            stmt,
            f"adds foreign key {name} on {table} -> {ref} validated at once: both tables "
            "locked through a full scan",
        )
    elif con.contype == CT.CONSTR_CHECK and not con.skip_validation:
        a.report(
            "M006",
            stmt,
            f"adds CHECK {name} on {table} validated at once: ACCESS EXCLUSIVE through a full scan",
        )
    elif con.contype == CT.CONSTR_UNIQUE and not con.indexname:
        if leaves_hold_it(a, schema, table, lambda leaf: leaf in a.tracker.unique_tables):
            return  # it attaches each leaf's unique constraint: no build
        a.report(
            "M008",
            stmt,
            f"adds UNIQUE {name} on {table}: its index is built under ACCESS EXCLUSIVE",
        )
        if a.live is not None and keys:
            report_duplicates(a, stmt, schema, table, [quote(k) for k in keys], None)
    elif con.contype == CT.CONSTR_PRIMARY and con.indexname and a.live is not None:
        # USING INDEX still sets NOT NULL on its columns: a scan unless proven.
        for column in a.live.nullable_index_columns(schema, con.indexname) or []:
            if not a.not_null_proven(schema, table, column):
                a.report(
                    "M009",
                    stmt,
                    f"PRIMARY KEY USING INDEX {con.indexname} makes {table}.{column} NOT "
                    "NULL, which scans the table under ACCESS EXCLUSIVE: validate a CHECK "
                    f"({column} IS NOT NULL) first",
                )
    elif con.contype == CT.CONSTR_PRIMARY and not con.indexname:
        if leaves_hold_it(a, schema, table, lambda leaf: leaf in a.tracker.primary_tables):
            return  # it attaches each leaf's primary key: no build (their NOT NULL holds)
        a.report(
            "M009",
            stmt,
            f"adds PRIMARY KEY {name} on {table}: index build and NOT NULL scan under "
            "ACCESS EXCLUSIVE",
        )
        if a.live is not None and keys:
            report_duplicates(a, stmt, schema, table, [quote(k) for k in keys], None)
    elif con.contype == CT.CONSTR_EXCLUSION:
        method = con.access_method or "gist"
        if _built_concurrently_before(a, stmt, table, method):
            # add_exclusion's route: the lock is still held through a build, only bounded.
            a.report(
                "M025",
                stmt,
                f"adds EXCLUDE constraint {name} on {table}: its index is still built under "
                f"ACCESS EXCLUSIVE and every row checked through it (it cannot be NOT VALID); "
                f"the same operation built a {method} index on it concurrently first, which "
                "lets that time be measured before the lock, not shortened",
                severity="warning",
            )
        else:
            a.report(
                "M025",
                stmt,
                f"adds EXCLUDE constraint {name} on {table}: built under ACCESS EXCLUSIVE and "
                "it cannot be NOT VALID",
            )
    elif con.contype == CT.CONSTR_NOTNULL and not con.skip_validation:
        for key in keys or [""]:
            set_not_null(a, stmt, schema, table, key, new)


def _built_concurrently_before(a: Analyzer, stmt: Stmt, table: str, method: str) -> bool:
    """True when the same operation built an index of ``method`` on ``table``
    CONCURRENTLY before this statement (add_exclusion's timed helper index)."""
    return any(
        isinstance(s.node, ast.IndexStmt)
        and s.node.concurrent
        and s.node.relation is not None
        and s.node.relation.relname == table
        and (s.node.accessMethod or "btree") == method
        for s in a.earlier(stmt)
    )


def set_not_null(a: Analyzer, stmt: Stmt, schema: str, table: str, column: str, new: bool) -> None:
    """Rule 14: SET NOT NULL without a validated CHECK (before 12: always)."""
    if new:
        return
    proven = a.not_null_proven(schema, table, column)
    if a.version < 120000:
        a.report(
            "M014",
            stmt,
            f"SET NOT NULL on {table}.{column} scans the table under ACCESS EXCLUSIVE; "
            f"before PostgreSQL 12 (server {a.version // 10000}) no CHECK avoids it",
        )
    elif not proven:
        a.report(
            "M014",
            stmt,
            f"SET NOT NULL on {table}.{column} with no validated CHECK ({column} IS NOT "
            "NULL) before it: a full scan under ACCESS EXCLUSIVE",
        )


def drop_column(
    a: Analyzer,
    stmt: Stmt,
    state: UnitState,
    table: str,
    column: str,
    new: bool,
    phase: LintPhase | None,
) -> None:
    """Rule 21: DROP COLUMN of a column the plan did not add, outside the contract."""
    state.dropped_columns.add((table, column))
    if new or (table, column) in a.tracker.columns:
        return
    if phase == "contract":
        return
    where = {
        "expand": "in the expand: the old version still reads and writes it",
        "rollback": "in a rollback, though the plan did not add it",
        None: "outside a contract step: the old version may still use it",
    }[phase]
    a.report(
        "M021",
        stmt,
        f"drops {table}.{column} {where}",
        "error" if phase else "warning",
    )


def drop_constraint(
    a: Analyzer,
    stmt: Stmt,
    schema: str,
    table: str,
    name: str,
    new: bool,
    phase: LintPhase | None,
) -> None:
    """Rule 22: dropping a foreign key outside the contract."""
    if new or phase == "contract":
        return
    known_fk = (table, name) in a.tracker.foreign_keys
    if known_fk:
        if phase == "rollback":
            return  # the plan added it; the rollback takes it away again
    elif a.live is None or a.live.constraint_kind(schema, table, name) != "f":
        return
    where = "in the expand" if phase == "expand" else "outside a contract step"
    a.report(
        "M022",
        stmt,
        f"drops foreign key {name} of {table} {where}: integrity the old version relies on is gone",
        "error" if phase else "warning",
    )
