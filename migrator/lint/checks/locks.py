"""Locks held too long, taken by hand, or waited for without a timeout: rules M029,
M032, M039 (COMMENT ON), M040 (LOCK TABLE) and M042 (statement_timeout, optional).

Most read every statement: which existing tables it locks ACCESS EXCLUSIVE, whether it
is slow (a scan, a rewrite, a build, data changes), and the timeouts in force. A LOCK
TABLE is exempt from M040 where the statement right after it takes that mode on that
table anyway (`locks_taken`): it only takes the lock earlier, in the order chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pglast import ast, enums

from migrator.lint.checks.alter_table import leaves_hold_it
from migrator.lint.model import LintPhase, Stmt, Unit, UnitState, is_zero, names, option_on, rel
from migrator.lint.registry import on

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType

# LOCK TABLE's mode numbers (lockdefs.h): ShareLock, the weakest that blocks writes, and
# AccessExclusiveLock.
SHARE_MODE = 5
SHARE_ROW_EXCLUSIVE_MODE = 6
ACCESS_EXCLUSIVE_MODE = 8
LOCK_MODES = {
    1: "ACCESS SHARE",
    2: "ROW SHARE",
    3: "ROW EXCLUSIVE",
    4: "SHARE UPDATE EXCLUSIVE",
    5: "SHARE",
    6: "SHARE ROW EXCLUSIVE",
    7: "EXCLUSIVE",
    8: "ACCESS EXCLUSIVE",
}
# ALTER TABLE subcommands that take less than ACCESS EXCLUSIVE. (REPLICA IDENTITY is not
# one: PostgreSQL 15 and 18 take ACCESS EXCLUSIVE for it.)
WEAK_ALTERS = frozenset(
    {
        AT.AT_ValidateConstraint,
        AT.AT_SetStatistics,
        AT.AT_SetOptions,
        AT.AT_ResetOptions,
        AT.AT_ClusterOn,
        AT.AT_DropCluster,
        AT.AT_EnableTrig,
        AT.AT_EnableAlwaysTrig,
        AT.AT_EnableReplicaTrig,
        AT.AT_DisableTrig,
        AT.AT_EnableTrigAll,
        AT.AT_DisableTrigAll,
        AT.AT_EnableTrigUser,
        AT.AT_DisableTrigUser,
        AT.AT_AttachPartition,
        AT.AT_DetachPartitionFinalize,
    }
)


def vacuum_full(node: ast.VacuumStmt) -> bool:
    """VACUUM (FULL) or VACUUM FULL (not ``VACUUM (FULL false)``)."""
    return option_on(node.options, "full")


def alter_is_ae(cmd: ast.Node) -> bool:
    """An ALTER TABLE subcommand that takes ACCESS EXCLUSIVE."""
    if not isinstance(cmd, ast.AlterTableCmd):
        return False
    if cmd.subtype in WEAK_ALTERS:
        return False
    if cmd.subtype == AT.AT_DetachPartition:
        return not (isinstance(cmd.def_, ast.PartitionCmd) and cmd.def_.concurrent)
    if cmd.subtype == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        # A foreign key takes SHARE ROW EXCLUSIVE, not ACCESS EXCLUSIVE.
        return cmd.def_.contype != CT.CONSTR_FOREIGN
    return True


def ae_tables(a: Analyzer, node: ast.Node) -> list[str]:
    """Existing tables this statement locks ACCESS EXCLUSIVE."""
    found: list[str] = []
    if isinstance(node, ast.AlterTableStmt) and node.objtype == OT.OBJECT_TABLE:
        strong = [c for c in node.cmds or () if alter_is_ae(c)]
        if strong and node.relation is not None:
            found.append(rel(node.relation))
    elif isinstance(node, ast.RenameStmt) and node.relation is not None:
        if node.renameType in (OT.OBJECT_TABLE, OT.OBJECT_COLUMN, OT.OBJECT_TABCONSTRAINT):
            found.append(rel(node.relation))
    elif isinstance(node, ast.DropStmt) and not node.concurrent:
        if node.removeType == OT.OBJECT_TABLE:
            found += [names(o)[-1] for o in node.objects or ()]
        elif node.removeType == OT.OBJECT_INDEX:
            for o in node.objects or ():
                index = names(o)[-1]
                found.append(a.index_table(index, names(o)[:-1]) or index)
        elif node.removeType == OT.OBJECT_TRIGGER:
            found += [names(o)[-2] for o in node.objects or () if len(names(o)) >= 2]
    elif isinstance(node, ast.TruncateStmt):
        found += [rel(r) for r in node.relations or ()]
    elif isinstance(node, ast.ClusterStmt) and node.relation is not None:
        found.append(rel(node.relation))
    elif isinstance(node, ast.VacuumStmt) and vacuum_full(node):
        found += [rel(r.relation) for r in node.rels or () if r.relation is not None]
    elif isinstance(node, ast.RefreshMatViewStmt) and not node.concurrent:
        if node.relation is not None:
            found.append(rel(node.relation))
    elif isinstance(node, ast.LockStmt) and (node.mode or 0) >= ACCESS_EXCLUSIVE_MODE:
        found += [rel(r) for r in node.relations or () if isinstance(r, ast.RangeVar)]
    return [t for t in found if not a.new(t)]


def slow(a: Analyzer, node: ast.Node) -> str | None:
    """What makes a statement slow (a scan, a rewrite, a build, data changes)."""
    if isinstance(node, ast.UpdateStmt | ast.DeleteStmt) and node.relation is not None:
        if not a.new(rel(node.relation)):
            return f"{type(node).__name__[:-4].upper()} of {rel(node.relation)}"
    if isinstance(node, ast.InsertStmt) and node.relation is not None:
        sel = node.selectStmt
        if isinstance(sel, ast.SelectStmt) and sel.fromClause:
            return f"INSERT ... SELECT into {rel(node.relation)}"
    if isinstance(node, ast.IndexStmt) and node.relation is not None:
        if not node.concurrent and not a.new(rel(node.relation)):
            return f"building index {node.idxname or ''} on {rel(node.relation)}"
    if isinstance(node, ast.AlterTableStmt) and node.relation is not None:
        table = rel(node.relation)
        if a.new(table):
            return None
        for cmd in node.cmds or ():
            if not isinstance(cmd, ast.AlterTableCmd):
                continue
            if cmd.subtype == AT.AT_ValidateConstraint:
                return f"validating {cmd.name} (a full scan of {table})"
            if cmd.subtype == AT.AT_AlterColumnType:
                return f"changing the type of {table}.{cmd.name}"
    if isinstance(node, ast.ClusterStmt | ast.RefreshMatViewStmt | ast.ReindexStmt):
        return type(node).__name__.removesuffix("Stmt")
    return None


def takes_strong_lock(a: Analyzer, node: ast.Node) -> bool:
    """The statement waits for a lock that queues the table's traffic behind it."""
    if ae_tables(a, node):
        return True
    if isinstance(node, ast.IndexStmt) and node.relation is not None:
        return not node.concurrent and not a.new(rel(node.relation))
    if isinstance(node, ast.AlterTableStmt) and node.relation is not None:
        return not a.new(rel(node.relation))
    return False


@on(ast.Node, stage="first")
def slow_work_under_access_exclusive(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 32: slow work while the transaction holds ACCESS EXCLUSIVE."""
    reason = slow(a, stmt.node)
    if reason and state.ae_tables and unit.transactional:
        a.report(
            "M032",
            stmt,
            f"{reason} while this transaction holds ACCESS EXCLUSIVE on "
            f"{', '.join(state.ae_tables)}: every query on it waits until the commit",
        )


@on(ast.Node, stage="last")
def lock_timeout(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 29: nothing may wait for a lock without a lock_timeout."""
    node = stmt.node
    if isinstance(node, ast.VariableSetStmt) and (node.name or "").lower() == "lock_timeout":
        off = node.kind in (
            enums.VariableSetKind.VAR_RESET,
            enums.VariableSetKind.VAR_SET_DEFAULT,
        ) or is_zero(node.args)
        if a.managed:
            if off:
                a.report(
                    "M029",
                    stmt,
                    "turns off the lock_timeout migrator sets for every step: a DDL "
                    "statement waiting for its lock would queue all traffic behind it",
                )
            return
        if node.is_local:
            state.local_lock_timeout = not off
        else:
            a.tracker.lock_timeout = not off
        return
    if not takes_strong_lock(a, node):
        return
    if a.managed:
        if a.plan_lock_timeout is not None and a.plan_lock_timeout <= 0:
            a.report(
                "M029",
                stmt,
                "the plan sets database.lock_timeout to 0: this statement may wait for "
                "its lock forever, with every query on the table queued behind it",
            )
        return
    if not (a.tracker.lock_timeout or state.local_lock_timeout):
        a.report(
            "M029",
            stmt,
            "takes a strong lock with no lock_timeout set before it: while it waits, "
            "every query on the table queues behind it",
        )
        # One finding per file is enough to say it.
        a.tracker.lock_timeout = True


@on(ast.Node, stage="last")
def access_exclusive_on_many_tables(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 32: ACCESS EXCLUSIVE on several existing tables in one transaction."""
    if not unit.transactional or id(stmt) in state.locks_taken_anyway:
        return
    for table in ae_tables(a, stmt.node):
        if table not in state.ae_tables:
            state.ae_tables.append(table)
    if len(state.ae_tables) > 1 and not state.reported_many_ae:
        state.reported_many_ae = True
        a.report(
            "M032",
            stmt,
            f"one transaction takes ACCESS EXCLUSIVE on {len(state.ae_tables)} tables "
            f"({', '.join(state.ae_tables)}): longer stalls and deadlocks",
        )


@on(ast.CommentStmt)
def comment_on(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 39: COMMENT ON a table, column or constraint of an existing table."""
    node = stmt.node
    assert isinstance(node, ast.CommentStmt)
    parts: list[str] = names(node.object) if isinstance(node.object, tuple | list) else []
    if node.objtype == OT.OBJECT_TABLE and parts:
        table = parts[-1]
    elif node.objtype in (OT.OBJECT_COLUMN, OT.OBJECT_TABCONSTRAINT) and len(parts) >= 2:
        table = parts[-2]
    else:
        return
    # A transaction that already holds ACCESS EXCLUSIVE on it waits for nothing more.
    if a.new(table) or table in state.ae_tables:
        return
    a.report(
        "M039",
        stmt,
        f"COMMENT ON takes SHARE UPDATE EXCLUSIVE on {table}: it waits behind any VACUUM "
        "or index build on it, and later DDL waits behind it",
    )


@on(ast.LockStmt)
def lock_table(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 40: LOCK TABLE in a mode that blocks writes, on an existing table."""
    node = stmt.node
    assert isinstance(node, ast.LockStmt)
    mode = node.mode or ACCESS_EXCLUSIVE_MODE
    if mode < SHARE_MODE:
        return
    relations = [r for r in node.relations or () if isinstance(r, ast.RangeVar)]
    wanted = {(r.schemaname or a.schema, rel(r)) for r in relations}
    taken = _taken_after(a, unit, stmt, wanted) if unit.transactional else {}
    children = {rel(r): _children_locked(a, r) for r in relations}
    if relations and all(
        taken.get((r.schemaname or a.schema, rel(r)), 0) >= mode and not children[rel(r)]
        for r in relations
    ):
        # Only earlier, in the order chosen (a referenced table before the referencing
        # one, as the application's writes go): nothing more is held, nothing longer.
        state.locks_taken_anyway.add(id(stmt))
        return
    tables = [rel(r) for r in relations if not a.new(rel(r))]
    if tables:
        blocked = "every read and write" if mode == ACCESS_EXCLUSIVE_MODE else "every write"
        also = "; ".join(
            f"without ONLY it also locks {t}'s inheritance children ({', '.join(c)})"
            for t, c in children.items()
            if c
        )
        a.report(
            "M040",
            stmt,
            f"LOCK TABLE {', '.join(tables)} IN {LOCK_MODES.get(mode, str(mode))} MODE blocks "
            f"{blocked} until the transaction ends" + (f" ({also})" if also else ""),
        )


def _children_locked(a: Analyzer, relation: ast.RangeVar) -> list[str]:
    """The plain inheritance children a LOCK TABLE without ONLY locks with the table,
    which no statement on the table itself (a foreign key's) locks: asked of the
    database; offline, none are known (a partitioned table's partitions are no such
    children: its foreign keys lock them too)."""
    if not relation.inh or a.live is None or a.new(rel(relation)):
        return []
    schema = relation.schemaname or a.schema
    return a.live.inheritance_children(schema, rel(relation)) or []


def _taken_after(
    a: Analyzer, unit: Unit, stmt: Stmt, wanted: set[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The locks (`locks_taken`) of the statement after a LOCK TABLE that locks one of
    the ``wanted`` tables: past the LOCK TABLEs right after it (a step that locks two
    tables first locks both), and past quick work on that statement's own tables alone
    (`_quick_on`: a contract step drops a trigger before its column). Anything else
    in between, and nothing is assumed."""
    statements = unit.statements
    at = next((i for i, s in enumerate(statements) if s is stmt), len(statements))
    between: list[Stmt] = []
    for later in statements[at + 1 :]:
        if isinstance(later.node, ast.LockStmt):
            continue
        taken = locks_taken(a, later)
        if wanted & taken.keys():
            tables = {table for _, table in taken}
            return taken if all(_quick_on(a, s, tables) for s in between) else {}
        between.append(later)
    return {}


def _quick_on(a: Analyzer, stmt: Stmt, tables: set[str]) -> bool:
    """A statement that locks none but ``tables`` and does no slow work there: dropping
    a trigger on one of them or a function, ALTER TABLE of one of them, a sequence's
    ALTER or rename, GRANT, COMMENT, SET (a role)."""
    node = stmt.node
    if isinstance(node, ast.DropStmt):
        if node.removeType == OT.OBJECT_FUNCTION:
            return True
        return node.removeType == OT.OBJECT_TRIGGER and set(ae_tables(a, node)) <= tables
    if isinstance(node, ast.AlterTableStmt):
        return (
            node.objtype == OT.OBJECT_TABLE
            and node.relation is not None
            and rel(node.relation) in tables
            and slow(a, node) is None
            and {table for _, table in locks_taken(a, stmt)} <= tables
        )
    if isinstance(node, ast.RenameStmt):
        return node.renameType == OT.OBJECT_SEQUENCE or (
            node.relation is not None and rel(node.relation) in tables
        )
    return isinstance(
        node, ast.AlterSeqStmt | ast.GrantStmt | ast.CommentStmt | ast.VariableSetStmt
    )


def _validated_key(a: Analyzer, name: str) -> Callable[[str], bool]:
    """Whether a table holds validated constraint ``name`` (one the plan validated)."""
    return lambda table: (table, name) in a.tracker.validated_constraints


def locks_taken(a: Analyzer, stmt: Stmt | None) -> dict[tuple[str, str], int]:
    """(schema, table) -> the strongest lock mode a statement takes there, for the
    statements whose locks M040's exemption knows: ALTER TABLE's own table (ACCESS
    EXCLUSIVE, SHARE ROW EXCLUSIVE for a foreign key), the table a foreign key it adds
    references (SHARE ROW EXCLUSIVE; ACCESS EXCLUSIVE where a partitioned table's key
    attaches its leaves' validated ones, whose action triggers it drops), and the table
    a foreign key it drops references (ACCESS EXCLUSIVE), known from the same plan or
    file, else asked of the database (a DROP COLUMN's keys: asked only); with neither,
    nothing is assumed."""
    taken: dict[tuple[str, str], int] = {}
    node = stmt.node if stmt is not None else None
    if isinstance(node, ast.DropStmt) and node.removeType == OT.OBJECT_TABLE:
        return _drop_table_takes(a, node)
    if not isinstance(node, ast.AlterTableStmt) or node.relation is None:
        return taken
    if node.objtype != OT.OBJECT_TABLE:
        return taken
    schema = node.relation.schemaname or a.schema
    table = rel(node.relation)

    def take(where: tuple[str, str], mode: int) -> None:
        taken[where] = max(taken.get(where, 0), mode)

    for cmd in node.cmds or ():
        if not isinstance(cmd, ast.AlterTableCmd):
            continue
        if alter_is_ae(cmd):
            take((schema, table), ACCESS_EXCLUSIVE_MODE)
        con = cmd.def_
        if (
            cmd.subtype == AT.AT_AddConstraint
            and isinstance(con, ast.Constraint)
            and con.contype == CT.CONSTR_FOREIGN
            and con.pktable is not None
        ):
            take((schema, table), SHARE_ROW_EXCLUSIVE_MODE)
            attaches = not con.skip_validation and leaves_hold_it(
                a, schema, table, _validated_key(a, con.conname or "")
            )
            take(
                (con.pktable.schemaname or a.schema, rel(con.pktable)),
                ACCESS_EXCLUSIVE_MODE if attaches else SHARE_ROW_EXCLUSIVE_MODE,
            )
        elif cmd.subtype == AT.AT_DropConstraint and cmd.name:
            target = a.tracker.foreign_key_targets.get((table, cmd.name))
            dropped = (table, cmd.name) in a.tracker.dropped_constraints
            if target is None and a.live is not None and not dropped:
                target = a.live.foreign_key_target(schema, table, cmd.name)
            if target is not None:
                take(target, ACCESS_EXCLUSIVE_MODE)
        elif cmd.subtype == AT.AT_DropColumn and cmd.name:
            # Its foreign keys go with it: those the file added over it, and those the
            # database has over it that the file has not dropped already.
            for key, columns in a.tracker.foreign_key_columns.items():
                target = a.tracker.foreign_key_targets.get(key)
                if key[0] == table and cmd.name in columns and target is not None:
                    take(target, ACCESS_EXCLUSIVE_MODE)
            live = a.live.column_foreign_key_targets(schema, table, cmd.name) if a.live else None
            for name, target in live or []:
                if (table, name) not in a.tracker.dropped_constraints:
                    take(target, ACCESS_EXCLUSIVE_MODE)
    return taken


def _drop_table_takes(a: Analyzer, node: ast.DropStmt) -> dict[tuple[str, str], int]:
    """DROP TABLE: ACCESS EXCLUSIVE on each table, and on each table their foreign keys
    reference (dropped with them): those the file added, and with a database those
    there before it, less the ones the file dropped."""
    taken: dict[tuple[str, str], int] = {}
    for o in node.objects or ():
        parts = names(o)
        schema, table = (parts[-2] if len(parts) > 1 else a.schema), parts[-1]
        taken[(schema, table)] = ACCESS_EXCLUSIVE_MODE
        keys = {k: t for k, t in a.tracker.foreign_key_targets.items() if k[0] == table}
        if a.live is not None and not a.new(table):
            for key, target in a.live.table_foreign_key_targets(schema, table) or []:
                if key not in a.tracker.dropped_constraints:
                    keys.setdefault(key, target)
        for target in keys.values():
            taken[target] = ACCESS_EXCLUSIVE_MODE
    return taken


@on(ast.Node, stage="last")
def statement_timeout(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 42 (optional): locking or slow work with no statement_timeout to bound it."""
    if "M042" not in a.enabled:
        return
    node = stmt.node
    if isinstance(node, ast.VariableSetStmt) and (node.name or "").lower() == "statement_timeout":
        off = node.kind in (
            enums.VariableSetKind.VAR_RESET,
            enums.VariableSetKind.VAR_SET_DEFAULT,
        ) or is_zero(node.args)
        if node.is_local:
            state.local_statement_timeout = not off
        else:
            a.tracker.statement_timeout = not off
        return
    if not (takes_strong_lock(a, node) or slow(a, node)):
        return
    if a.tracker.statement_timeout or state.local_statement_timeout:
        return
    if a.managed and a.plan_statement_timeout:
        return
    a.report(
        "M042",
        stmt,
        (
            "the plan sets no database.statement_timeout: "
            if a.managed
            else "no statement_timeout is set before it: "
        )
        + "nothing stops this statement, and the locks it holds, if it runs far longer "
        "than expected",
    )
    # One finding per plan or file is enough to say it.
    a.tracker.statement_timeout = True
