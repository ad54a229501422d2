"""The rules applied to parsed statements, one transaction (unit) at a time.

Statements come in as pglast parse trees grouped into units: the statements that share
one transaction, or a single statement that runs alone (autocommit). A `Tracker`
follows what earlier statements of the same plan or file created (tables, columns,
indexes, types, validated checks), so nothing the plan itself just created is held to
the locking rules meant for live tables.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pglast
from pglast import ast, enums
from pglast.stream import RawStream
from pglast.visitors import Visitor

from migrator.lint.findings import LintFinding
from migrator.lint.live import Live
from migrator.lint.rules import RULES, Severity
from migrator.sqltext import ident

LintPhase = Literal["expand", "contract", "rollback"]

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType
TK = enums.TransactionStmtKind

# Functions PostgreSQL marks volatile that defaults commonly use: a DEFAULT calling one
# is evaluated per row, so ADD COLUMN rewrites the table.
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "gen_random_bytes",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "setval",
        "txid_current",
        "pg_current_xact_id",
    }
)
# Stable or immutable built-ins seen in defaults: evaluated once by ADD COLUMN (11+).
NONVOLATILE_FUNCTIONS = frozenset(
    {
        "now",
        "statement_timestamp",
        "transaction_timestamp",
        "current_setting",
        "lower",
        "upper",
        "length",
        "concat",
        "to_char",
        "to_jsonb",
        "jsonb_build_object",
        "json_build_object",
        "array_length",
        "coalesce",
        "make_interval",
        "date_trunc",
    }
)
# LOCK TABLE's mode number for ACCESS EXCLUSIVE (lockdefs.h: AccessExclusiveLock).
ACCESS_EXCLUSIVE_MODE = 8
SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
# ALTER TABLE subcommands that take less than ACCESS EXCLUSIVE.
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
        AT.AT_ReplicaIdentity,
    }
)


@dataclass(frozen=True)
class Source:
    """Where statements come from, and what the plan suppresses there."""

    operation: str | None = None
    file: str | None = None
    line: int | None = None
    column: int | None = None
    context: str = ""
    ignore: dict[str, str] = field(default_factory=dict)

    def location_text(self) -> str:
        """``file:line:column`` where known, else the operation's name."""
        if self.file and self.line:
            return f"{self.file}:{self.line}:{self.column or 1}"
        return self.operation or self.file or "<sql>"


@dataclass(frozen=True)
class Stmt:
    """One parsed statement, its SQL text, and where it stands."""

    node: ast.Node
    sql: str
    source: Source


@dataclass
class Unit:
    """Statements that share one transaction, or one statement run alone."""

    statements: list[Stmt]
    transactional: bool


@dataclass
class Tracker:
    """What the statements seen so far created or proved."""

    tables: set[str] = field(default_factory=set)
    columns: set[tuple[str, str]] = field(default_factory=set)
    column_types: dict[tuple[str, str], ast.TypeName] = field(default_factory=dict)
    types: set[str] = field(default_factory=set)
    indexes: dict[str, str | None] = field(default_factory=dict)
    not_null_checks: dict[tuple[str, str], str] = field(default_factory=dict)
    validated_not_null: set[tuple[str, str]] = field(default_factory=set)
    validated_tables: set[str] = field(default_factory=set)
    foreign_keys: set[tuple[str, str]] = field(default_factory=set)
    matviews: set[str] = field(default_factory=set)
    lock_timeout: bool = False


@dataclass
class _UnitState:
    """What one transaction holds while its statements are judged."""

    ae_tables: list[str] = field(default_factory=list)
    added: set[tuple[str, str]] = field(default_factory=set)
    renamed_tables: list[tuple[str, Stmt]] = field(default_factory=list)
    views: set[str] = field(default_factory=set)
    dropped_columns: set[tuple[str, str]] = field(default_factory=set)
    new_enum_values: dict[str, str] = field(default_factory=dict)
    local_lock_timeout: bool = False
    reported_many_ae: bool = False


def _rel(node: ast.RangeVar | None) -> str:
    """The bare name of a relation ("" where there is none)."""
    return (node.relname or "") if node is not None else ""


def _name(node: ast.Node | None) -> str:
    return node.sval if isinstance(node, ast.String) and node.sval else ""


def _names(nodes: Any) -> list[str]:
    return [_name(n) for n in nodes or ()]


def type_name(tn: ast.TypeName) -> str:
    """The bare name of a type (``varchar``, ``int4``, ``mood``)."""
    return _names(tn.names)[-1]


def type_mods(tn: ast.TypeName) -> list[int]:
    """The integer type modifiers (``varchar(20)`` -> [20])."""
    mods = []
    for m in tn.typmods or ():
        if isinstance(m, ast.A_Const) and isinstance(m.val, ast.Integer):
            mods.append(int(m.val.ival or 0))
    return mods


def type_sql(tn: ast.TypeName) -> str:
    """A type as short text for messages."""
    mods = type_mods(tn)
    return type_name(tn) + (f"({', '.join(map(str, mods))})" if mods else "")


def parse_type(text: str) -> ast.TypeName | None:
    """A type written as SQL (as format_type gives it) as a parse tree."""
    try:
        (raw,) = pglast.parse_sql(f"SELECT NULL::{text}")
    except (pglast.parser.ParseError, ValueError):
        return None
    select = raw.stmt
    assert isinstance(select, ast.SelectStmt) and select.targetList
    target = select.targetList[0]
    if isinstance(target, ast.ResTarget) and isinstance(target.val, ast.TypeCast):
        return target.val.typeName
    return None


def binary_coercible(old: ast.TypeName, new: ast.TypeName) -> bool:
    """True when changing a column from ``old`` to ``new`` needs no rewrite."""
    o, n = type_name(old), type_name(new)
    om, nm = type_mods(old), type_mods(new)
    if o == n and om == nm:
        return True
    if o in ("varchar", "text") and n == "text":
        return True
    if o in ("varchar", "text") and n == "varchar":
        return not nm or (o == "varchar" and bool(om) and nm[0] >= om[0])
    if o == n == "numeric":
        if not nm:
            return True
        return bool(om) and len(nm) == len(om) and nm[0] >= om[0] and nm[1:] == om[1:]
    if o == n == "varbit":
        return not nm or (bool(om) and nm[0] >= om[0])
    return o == "cidr" and n == "inet"


class _FuncNames(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.other = False

    def visit_FuncCall(self, ancestors: Any, node: ast.FuncCall) -> None:
        self.names.append(_names(node.funcname)[-1].lower())

    def visit_SubLink(self, ancestors: Any, node: ast.SubLink) -> None:
        self.other = True


class _Writes(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[ast.UpdateStmt | ast.DeleteStmt] = []

    def visit_UpdateStmt(self, ancestors: Any, node: ast.UpdateStmt) -> None:
        self.found.append(node)

    def visit_DeleteStmt(self, ancestors: Any, node: ast.DeleteStmt) -> None:
        self.found.append(node)


class _Strings(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.values: list[str] = []

    def visit_A_Const(self, ancestors: Any, node: ast.A_Const) -> None:
        if isinstance(node.val, ast.String) and node.val.sval is not None:
            self.values.append(node.val.sval)


def _null_test_column(expr: ast.Node | None) -> str | None:
    """``col IS NOT NULL`` -> col."""
    if (
        isinstance(expr, ast.NullTest)
        and expr.nulltesttype == enums.NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
    ):
        return _names(expr.arg.fields)[-1]
    return None


def _null_test_of(expression: str) -> str | None:
    try:
        (raw,) = pglast.parse_sql(f"SELECT {expression}")
    except (pglast.parser.ParseError, ValueError):
        return None
    select = raw.stmt
    if isinstance(select, ast.SelectStmt) and select.targetList:
        target = select.targetList[0]
        if isinstance(target, ast.ResTarget):
            return _null_test_column(target.val)
    return None


class Analyzer:
    """Applies the rules to units of statements, in the order they will run."""

    def __init__(
        self,
        server_version: int,
        *,
        schema: str = "public",
        live: Live | None = None,
        managed: bool = True,
        lock_timeout: float | None = 1.0,
    ) -> None:
        self.version = server_version
        self.schema = schema
        self.live = live
        # managed: migrator runs the statements (a plan): it owns the transactions and
        # sets lock_timeout. Otherwise a raw SQL file: its own BEGIN/COMMIT, its own SETs.
        self.managed = managed
        self.plan_lock_timeout = lock_timeout
        self.tracker = Tracker()
        self.findings: list[LintFinding] = []
        self._seen: set[tuple[str, str | None, str, str]] = set()
        self._recent: dict[str | None, list[Stmt]] = {}

    # -- reporting ---------------------------------------------------------------------

    def report(
        self, rule_id: str, stmt: Stmt, message: str, severity: Severity | None = None
    ) -> None:
        """Record a finding of one rule on one statement (once)."""
        rule = RULES[rule_id]
        src = stmt.source
        key = (rule_id, src.operation, stmt.sql, message)
        if key in self._seen:
            return
        self._seen.add(key)
        prefix = f"{src.context}: " if src.context else ""
        self.findings.append(
            LintFinding(
                rule=rule_id,
                severity=severity or rule.severity,
                message=f"{prefix}{message}",
                safe_form=rule.safe_form,
                sql=stmt.sql,
                operation=src.operation,
                file=src.file,
                line=src.line,
                column=src.column,
                suppressed=src.ignore.get(rule_id),
            )
        )

    # -- snapshots (the rollback is judged from the state after the expand) --------------

    def snapshot(self) -> Tracker:
        """A copy of what is known now."""
        return copy.deepcopy(self.tracker)

    def restore(self, tracker: Tracker) -> None:
        """Go back to a snapshot."""
        self.tracker = tracker

    # -- units -------------------------------------------------------------------------

    def run(self, unit: Unit, phase: LintPhase | None) -> None:
        """Judge one transaction (or one autocommit statement)."""
        state = _UnitState()
        for stmt in unit.statements:
            self._statement(stmt, unit, state, phase)
        for old, stmt in state.renamed_tables:
            if old not in state.views:
                self.report(
                    "M020",
                    stmt,
                    f"renames table {old} in place with no view named {old} created in the "
                    "same transaction: the old version's queries break at once",
                )

    def new(self, table: str | None) -> bool:
        """True for a table created earlier by the same plan or file."""
        return table in self.tracker.tables

    def _statement(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        handler = getattr(self, f"_on_{type(node).__name__}", None)
        ae_before = list(state.ae_tables)
        slow = self._slow(node, unit)
        if slow and ae_before and unit.transactional:
            self.report(
                "M032",
                stmt,
                f"{slow} while this transaction holds ACCESS EXCLUSIVE on "
                f"{', '.join(ae_before)}: every query on it waits until the commit",
            )
        if state.new_enum_values and not isinstance(node, ast.AlterEnumStmt):
            self._new_enum_value_used(stmt, state)
        if handler is not None:
            handler(stmt, unit, state, phase)
        self._unbounded_writes(stmt)
        self._lock_timeout_rule(stmt, unit, state)
        self.remember(stmt)
        if unit.transactional:
            for table in self._ae_tables(node):
                if table not in state.ae_tables:
                    state.ae_tables.append(table)
            if len(state.ae_tables) > 1 and not state.reported_many_ae:
                state.reported_many_ae = True
                self.report(
                    "M032",
                    stmt,
                    f"one transaction takes ACCESS EXCLUSIVE on {len(state.ae_tables)} tables "
                    f"({', '.join(state.ae_tables)}): longer stalls and deadlocks",
                )

    def _new_enum_value_used(self, stmt: Stmt, state: _UnitState) -> None:
        """Rule 24: a value ADD VALUE added cannot be used before its transaction commits."""
        strings = _Strings()
        strings(stmt.node)
        for value in strings.values:
            if value in state.new_enum_values:
                self.report(
                    "M024",
                    stmt,
                    f"uses {value!r}, which this transaction added to enum "
                    f"{state.new_enum_values[value]}: PostgreSQL refuses it until the ADD "
                    "VALUE commits (unsafe use of new value)",
                )
                return

    # -- locks ---------------------------------------------------------------------------

    def _ae_tables(self, node: ast.Node) -> list[str]:
        """Existing tables this statement locks ACCESS EXCLUSIVE."""
        found: list[str] = []
        if isinstance(node, ast.AlterTableStmt) and node.objtype == OT.OBJECT_TABLE:
            strong = [c for c in node.cmds or () if self._alter_is_ae(c)]
            if strong and node.relation is not None:
                found.append(_rel(node.relation))
        elif isinstance(node, ast.RenameStmt) and node.relation is not None:
            if node.renameType in (OT.OBJECT_TABLE, OT.OBJECT_COLUMN, OT.OBJECT_TABCONSTRAINT):
                found.append(_rel(node.relation))
        elif isinstance(node, ast.DropStmt) and not node.concurrent:
            if node.removeType == OT.OBJECT_TABLE:
                found += [_names(o)[-1] for o in node.objects or ()]
            elif node.removeType == OT.OBJECT_INDEX:
                for o in node.objects or ():
                    index = _names(o)[-1]
                    found.append(self._index_table(index, _names(o)[:-1]) or index)
            elif node.removeType == OT.OBJECT_TRIGGER:
                found += [_names(o)[-2] for o in node.objects or () if len(_names(o)) >= 2]
        elif isinstance(node, ast.TruncateStmt):
            found += [_rel(r) for r in node.relations or ()]
        elif isinstance(node, ast.ClusterStmt) and node.relation is not None:
            found.append(_rel(node.relation))
        elif isinstance(node, ast.VacuumStmt) and self._vacuum_full(node):
            found += [_rel(r.relation) for r in node.rels or () if r.relation is not None]
        elif isinstance(node, ast.RefreshMatViewStmt) and not node.concurrent:
            if node.relation is not None:
                found.append(_rel(node.relation))
        elif isinstance(node, ast.LockStmt) and (node.mode or 0) >= ACCESS_EXCLUSIVE_MODE:
            found += [_rel(r) for r in node.relations or () if isinstance(r, ast.RangeVar)]
        return [t for t in found if not self.new(t)]

    @staticmethod
    def _alter_is_ae(cmd: ast.Node) -> bool:
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

    def _index_table(self, index: str, schema: list[str]) -> str | None:
        if index in self.tracker.indexes:
            return self.tracker.indexes[index]
        if self.live is not None:
            return self.live.index_table(schema[-1] if schema else self.schema, index)
        return None

    @staticmethod
    def _vacuum_full(node: ast.VacuumStmt) -> bool:
        return any(isinstance(o, ast.DefElem) and o.defname == "full" for o in node.options or ())

    def _slow(self, node: ast.Node, unit: Unit) -> str | None:
        """What makes a statement slow (a scan, a rewrite, a build, data changes)."""
        if isinstance(node, ast.UpdateStmt | ast.DeleteStmt) and node.relation is not None:
            if not self.new(_rel(node.relation)):
                return f"{type(node).__name__[:-4].upper()} of {_rel(node.relation)}"
        if isinstance(node, ast.InsertStmt) and node.relation is not None:
            sel = node.selectStmt
            if isinstance(sel, ast.SelectStmt) and sel.fromClause:
                return f"INSERT ... SELECT into {_rel(node.relation)}"
        if isinstance(node, ast.IndexStmt) and node.relation is not None:
            if not node.concurrent and not self.new(_rel(node.relation)):
                return f"building index {node.idxname or ''} on {_rel(node.relation)}"
        if isinstance(node, ast.AlterTableStmt) and node.relation is not None:
            table = _rel(node.relation)
            if self.new(table):
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

    def _lock_timeout_rule(self, stmt: Stmt, unit: Unit, state: _UnitState) -> None:
        """Rule 29: nothing may wait for a lock without a lock_timeout."""
        node = stmt.node
        if isinstance(node, ast.VariableSetStmt) and (node.name or "").lower() == "lock_timeout":
            off = node.kind in (
                enums.VariableSetKind.VAR_RESET,
                enums.VariableSetKind.VAR_SET_DEFAULT,
            ) or _is_zero(node.args)
            if self.managed:
                if off:
                    self.report(
                        "M029",
                        stmt,
                        "turns off the lock_timeout migrator sets for every step: a DDL "
                        "statement waiting for its lock would queue all traffic behind it",
                    )
                return
            if node.is_local:
                state.local_lock_timeout = not off
            else:
                self.tracker.lock_timeout = not off
            return
        if not self._takes_strong_lock(node):
            return
        if self.managed:
            if self.plan_lock_timeout is not None and self.plan_lock_timeout <= 0:
                self.report(
                    "M029",
                    stmt,
                    "the plan sets database.lock_timeout to 0: this statement may wait for "
                    "its lock forever, with every query on the table queued behind it",
                )
            return
        if not (self.tracker.lock_timeout or state.local_lock_timeout):
            self.report(
                "M029",
                stmt,
                "takes a strong lock with no lock_timeout set before it: while it waits, "
                "every query on the table queues behind it",
            )
            # One finding per file is enough to say it.
            self.tracker.lock_timeout = True

    def _takes_strong_lock(self, node: ast.Node) -> bool:
        if self._ae_tables(node):
            return True
        if isinstance(node, ast.IndexStmt) and node.relation is not None:
            return not node.concurrent and not self.new(_rel(node.relation))
        if isinstance(node, ast.AlterTableStmt) and node.relation is not None:
            return not self.new(_rel(node.relation))
        return False

    # -- statements ------------------------------------------------------------------------

    def _on_CreateStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.CreateStmt)
        table = _rel(node.relation)
        self.tracker.tables.add(table)
        for element in node.tableElts or ():
            if isinstance(element, ast.ColumnDef):
                colname = element.colname or ""
                self.tracker.columns.add((table, colname))
                if element.typeName is not None:
                    self.tracker.column_types[(table, colname)] = element.typeName
                self._column_type_rules(stmt, table, element)
        if not unit.transactional and not node.if_not_exists:
            self._not_rerunnable(stmt, f"CREATE TABLE {table} without IF NOT EXISTS")

    def _on_CreateTableAsStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.CreateTableAsStmt)
        if node.into is not None and node.into.rel is not None:
            self.tracker.tables.add(_rel(node.into.rel))
            if node.objtype == OT.OBJECT_MATVIEW:
                self.tracker.matviews.add(_rel(node.into.rel))

    def _on_ViewStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.ViewStmt)
        if node.view is not None:
            state.views.add(_rel(node.view))
            if not node.replace:
                self.tracker.tables.add(_rel(node.view))

    def _on_CreateSeqStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.CreateSeqStmt)
        # A sequence is a relation that ALTER TABLE ... OWNER TO may name.
        self.tracker.tables.add(_rel(node.sequence))

    def _on_CreateEnumStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.CreateEnumStmt)
        self.tracker.types.add(_names(node.typeName)[-1])

    def _on_CreateDomainStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.CreateDomainStmt)
        name = _names(node.domainname)[-1]
        self.tracker.types.add(name)
        if any(
            isinstance(c, ast.Constraint) and c.contype == CT.CONSTR_CHECK
            for c in node.constraints or ()
        ):
            self.report(
                "M018",
                stmt,
                f"domain {name} has a CHECK: changing it later revalidates every column that "
                "uses the domain",
                "warning",
            )

    def _on_AlterDomainStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.AlterDomainStmt)
        name = _names(node.typeName)[-1]
        constraint = node.def_
        if (
            node.subtype == "C"
            and isinstance(constraint, ast.Constraint)
            and constraint.contype == CT.CONSTR_CHECK
            and name not in self.tracker.types
        ):
            self.report(
                "M018",
                stmt,
                f"adds a CHECK to domain {name}: every column of every table using it is "
                "scanned to validate it",
                "error",
            )

    def _on_IndexStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.IndexStmt)
        table = _rel(node.relation)
        schema = (node.relation.schemaname if node.relation else None) or self.schema
        name = node.idxname or f"(unnamed index on {table})"
        dropped_first = node.idxname is not None and self._dropped_before(stmt, unit, node.idxname)
        if node.idxname:
            self.tracker.indexes[node.idxname] = table
        if node.concurrent and unit.transactional:
            # Refused inside a transaction block even on a table created just before.
            self.report(
                "M003",
                stmt,
                f"CREATE INDEX CONCURRENTLY {name} inside a transaction: PostgreSQL refuses it",
            )
            return
        if self.new(table):
            return
        if not node.concurrent:
            self.report(
                "M001",
                stmt,
                f"CREATE INDEX {name} without CONCURRENTLY blocks every write to {table} "
                "for the whole build",
            )
        else:
            if not node.if_not_exists and not dropped_first:
                self._not_rerunnable(
                    stmt,
                    f"CREATE INDEX CONCURRENTLY {name} fails on a rerun (the name exists, "
                    "perhaps as the INVALID leftover of the failed attempt)",
                )
            self._invalid_index_rule(stmt, schema, node, dropped_first)
        if node.unique:
            self._duplicates_rule(stmt, schema, table, node)

    def _dropped_before(self, stmt: Stmt, unit: Unit, index: str) -> bool:
        """True when the same operation drops the index (IF EXISTS) right before."""
        for other in self._recent.get(stmt.source.operation, []):
            node = other.node
            if (
                isinstance(node, ast.DropStmt)
                and node.removeType == OT.OBJECT_INDEX
                and node.missing_ok
                and any(_names(o)[-1] == index for o in node.objects or ())
            ):
                return True
        return False

    def remember(self, stmt: Stmt) -> None:
        """Keep the statements of the current operation, for rules that look back."""
        self._recent.setdefault(stmt.source.operation, []).append(stmt)

    def _invalid_index_rule(
        self, stmt: Stmt, schema: str, node: ast.IndexStmt, dropped_first: bool
    ) -> None:
        if dropped_first or not node.idxname:
            return
        if self.live is not None:
            if self.live.index_valid(schema, node.idxname) is False:
                self.report(
                    "M004",
                    stmt,
                    f"index {schema}.{node.idxname} is INVALID (a failed concurrent build left "
                    "it): "
                    + (
                        "IF NOT EXISTS skips it and leaves the INVALID index in place"
                        if node.if_not_exists
                        else "the build fails on its name"
                    ),
                )
            return
        if node.if_not_exists:
            self.report(
                "M004",
                stmt,
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {node.idxname} silently keeps an "
                "INVALID index a failed attempt left behind; drop it first",
                "warning",
            )

    def _duplicates_rule(self, stmt: Stmt, schema: str, table: str, node: ast.IndexStmt) -> None:
        if self.live is None:
            return
        keys: list[str] = []
        for param in node.indexParams or ():
            if not isinstance(param, ast.IndexElem):
                return
            if param.name:
                keys.append(_quote(param.name))
            elif param.expr is not None:
                keys.append(RawStream()(param.expr))
        where = RawStream()(node.whereClause) if node.whereClause else None
        self._report_duplicates(stmt, schema, table, keys, where)

    def _report_duplicates(
        self, stmt: Stmt, schema: str, table: str, keys: list[str], where: str | None
    ) -> None:
        assert self.live is not None
        found = self.live.duplicates(schema, table, keys, where)
        if not found or found[0] == 0:
            return
        count, samples = found
        shown = "; ".join(f"({value}) x{n}" for value, n in samples)
        self.report(
            "M010",
            stmt,
            f"{count} key value(s) of ({', '.join(keys)}) appear more than once in "
            f"{schema}.{table}, so the unique build fails: {shown}",
        )

    def _on_DropStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.DropStmt)
        objects = [_names(o) for o in node.objects or () if isinstance(o, tuple | list)]
        if node.removeType == OT.OBJECT_INDEX:
            for parts in objects:
                index = parts[-1]
                table = self._index_table(index, parts[:-1])
                if node.concurrent and unit.transactional:
                    self.report(
                        "M003",
                        stmt,
                        f"DROP INDEX CONCURRENTLY {index} inside a transaction: PostgreSQL "
                        "refuses it",
                    )
                    continue
                if table is not None and self.new(table):
                    continue
                if not node.concurrent:
                    self.report(
                        "M002",
                        stmt,
                        f"DROP INDEX {index} without CONCURRENTLY takes ACCESS EXCLUSIVE on "
                        f"{table or 'its table'}",
                    )
                elif not node.missing_ok:
                    self._not_rerunnable(stmt, f"DROP INDEX CONCURRENTLY {index} without IF EXISTS")
        elif node.removeType == OT.OBJECT_TABLE:
            for parts in objects:
                self._drop_table(stmt, parts, phase)
            if not unit.transactional and not node.missing_ok:
                self._not_rerunnable(stmt, "DROP TABLE without IF EXISTS")
        elif not unit.transactional and not node.missing_ok:
            self._not_rerunnable(stmt, "DROP without IF EXISTS")

    def _drop_table(self, stmt: Stmt, parts: list[str], phase: LintPhase | None) -> None:
        table = parts[-1]
        schema = parts[-2] if len(parts) > 1 else self.schema
        if self.new(table):
            return
        if phase == "contract":
            rows = self.live.row_count(schema, table) if self.live is not None else None
            if rows:
                self.report(
                    "M022",
                    stmt,
                    f"drops {schema}.{table}, which holds {rows} rows: they are gone for good "
                    "(archive them first, then suppress this with the reason)",
                    "warning",
                )
            return
        where = {
            "expand": "in the expand, while the old version still uses it",
            "rollback": "in a rollback, though the plan did not create it",
            None: "outside a contract step",
        }[phase]
        rows = self.live.row_count(schema, table) if self.live is not None else None
        held = f" ({rows} rows)" if rows is not None else ""
        self.report(
            "M022",
            stmt,
            f"drops table {table}{held} {where}",
            "error" if phase else "warning",
        )

    def _on_TruncateStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.TruncateStmt)
        tables = [_rel(r) for r in node.relations or () if not self.new(r.relname)]
        if tables:
            self.report("M023", stmt, f"TRUNCATE of {', '.join(tables)} in a migration")

    def _unbounded_writes(self, stmt: Stmt) -> None:
        """Rule 23: UPDATE or DELETE without WHERE, at the top or inside a WITH."""
        writes = _Writes()
        writes(stmt.node)
        for node in writes.found:
            table = _rel(node.relation)
            if node.whereClause is None and not self.new(table):
                verb = "UPDATE" if isinstance(node, ast.UpdateStmt) else "DELETE"
                self.report(
                    "M023",
                    stmt,
                    f"{verb} of every row of {table} in one statement: row locks on the whole "
                    "table until it commits",
                )

    def _on_AlterEnumStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.AlterEnumStmt)
        name = _names(node.typeName)[-1]
        if node.oldVal:
            self.report(
                "M024",
                stmt,
                f"renames value {node.oldVal!r} of enum {name}: the running application still "
                "writes and compares the old label",
            )
            return
        if name in self.tracker.types:
            return
        if unit.transactional and self.version < 120000:
            self.report(
                "M024",
                stmt,
                f"ALTER TYPE {name} ADD VALUE inside a transaction fails before PostgreSQL 12 "
                f"(server {self.version // 10000})",
            )
        elif unit.transactional and node.newVal:
            state.new_enum_values[node.newVal] = name
        if node.newValNeighbor:
            where = "AFTER" if node.newValIsAfter else "BEFORE"
            self.report(
                "M024",
                stmt,
                f"adds {node.newVal!r} {where} {node.newValNeighbor!r}: comparisons and ORDER BY "
                f"over {name} change meaning for the running application",
                "warning",
            )
        if not unit.transactional and not node.skipIfNewValExists:
            self._not_rerunnable(stmt, f"ALTER TYPE {name} ADD VALUE without IF NOT EXISTS")

    def _on_ReindexStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.ReindexStmt)
        concurrent = any(
            isinstance(p, ast.DefElem) and p.defname == "concurrently" for p in node.params or ()
        )
        target = _rel(node.relation) if node.relation is not None else (node.name or "")
        if not concurrent:
            if node.relation is not None and self.new(_rel(node.relation)):
                return
            note = "" if self.version >= 120000 else " (no CONCURRENTLY before PostgreSQL 12)"
            self.report("M028", stmt, f"REINDEX {target} blocks writes for the rebuild{note}")
        elif self.version < 120000:
            self.report(
                "M028",
                stmt,
                f"REINDEX CONCURRENTLY needs PostgreSQL 12 (server {self.version // 10000}): "
                "the statement fails",
            )
        elif unit.transactional:
            self.report("M003", stmt, "REINDEX CONCURRENTLY inside a transaction fails")

    def _on_VacuumStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.VacuumStmt)
        if node.is_vacuumcmd and unit.transactional:
            self.report("M003", stmt, "VACUUM cannot run inside a transaction")
        if self._vacuum_full(node):
            tables = [_rel(r.relation) for r in node.rels or () if r.relation is not None]
            if not tables or any(not self.new(t) for t in tables):
                self.report(
                    "M028",
                    stmt,
                    f"VACUUM FULL {', '.join(tables) or '(every table)'} holds ACCESS EXCLUSIVE "
                    "through a full rewrite",
                )

    def _on_ClusterStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.ClusterStmt)
        table = _rel(node.relation) if node.relation is not None else "(every table)"
        if node.relation is None or not self.new(table):
            self.report("M028", stmt, f"CLUSTER {table} holds ACCESS EXCLUSIVE through a rewrite")

    def _on_RefreshMatViewStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.RefreshMatViewStmt)
        name = _rel(node.relation)
        if not node.concurrent and name not in self.tracker.matviews:
            self.report(
                "M028",
                stmt,
                f"REFRESH MATERIALIZED VIEW {name} without CONCURRENTLY blocks its readers",
            )

    def _on_TransactionStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.TransactionStmt)
        if not self.managed:
            return  # a raw file's own blocks are judged where the units are built
        if node.kind in (TK.TRANS_STMT_SAVEPOINT, TK.TRANS_STMT_RELEASE, TK.TRANS_STMT_ROLLBACK_TO):
            return
        word = stmt.sql.split(None, 1)[0].upper() if stmt.sql.strip() else "BEGIN"
        if node.kind in (TK.TRANS_STMT_BEGIN, TK.TRANS_STMT_START):
            why = (
                "is nested inside the step's transaction (PostgreSQL ignores it)"
                if unit.transactional
                else "opens a transaction migrator does not manage"
            )
        else:
            why = (
                "ends the step's transaction early: what follows runs outside it and the step "
                "is no longer recorded atomically"
                if unit.transactional
                else "ends a transaction migrator does not manage"
            )
        self.report("M031", stmt, f"{word} {why}")

    def _on_RenameStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.RenameStmt)
        if node.relation is None:
            return
        table = _rel(node.relation)
        if node.renameType == OT.OBJECT_COLUMN and node.relationType == OT.OBJECT_TABLE:
            old, new = node.subname or "", node.newname or ""
            if self.new(table) or (table, old) in self.tracker.columns:
                self.tracker.columns.add((table, new))
                return
            if (table, new) in state.dropped_columns:
                # The swap: the column of the new name went in this same transaction, so
                # no query sees a moment without it (rename_column's contract).
                return
            self.report(
                "M019",
                stmt,
                f"renames {table}.{old} to {new} in place: every query using {old} breaks at once",
            )
        elif node.renameType == OT.OBJECT_TABLE:
            new_name = node.newname or ""
            if self.new(table):
                self.tracker.tables.discard(table)
                self.tracker.tables.add(new_name)
                return
            state.renamed_tables.append((table, stmt))

    def _on_AlterTableStmt(
        self, stmt: Stmt, unit: Unit, state: _UnitState, phase: LintPhase | None
    ) -> None:
        node = stmt.node
        assert isinstance(node, ast.AlterTableStmt)
        if node.relation is None or node.objtype != OT.OBJECT_TABLE:
            return
        table = _rel(node.relation)
        schema = node.relation.schemaname or self.schema
        for cmd in node.cmds or ():
            if isinstance(cmd, ast.AlterTableCmd):
                self._alter(stmt, unit, state, phase, schema, table, cmd)

    def _alter(
        self,
        stmt: Stmt,
        unit: Unit,
        state: _UnitState,
        phase: LintPhase | None,
        schema: str,
        table: str,
        cmd: ast.AlterTableCmd,
    ) -> None:
        new = self.new(table)
        sub = cmd.subtype
        if sub == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            self._add_column(stmt, unit, schema, table, cmd.def_, new)
            if not unit.transactional and not cmd.missing_ok:
                self._not_rerunnable(stmt, "ADD COLUMN without IF NOT EXISTS")
        elif sub == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            self._add_constraint(stmt, state, schema, table, cmd.def_, new)
        elif sub == AT.AT_ValidateConstraint:
            name = cmd.name or ""
            if (table, name) in state.added:
                self.report(
                    "M007",
                    stmt,
                    f"validates {name} in the transaction that added it: the ADD's lock is "
                    "held through the scan",
                )
            column = self.tracker.not_null_checks.get((table, name))
            if column is not None:
                self.tracker.validated_not_null.add((table, column))
            self.tracker.validated_tables.add(table)
        elif sub == AT.AT_SetNotNull:
            self._set_not_null(stmt, schema, table, cmd.name or "", new)
        elif sub == AT.AT_DropNotNull:
            column = cmd.name or ""
            if not new and (table, column) not in self.tracker.columns:
                self.report(
                    "M015",
                    stmt,
                    f"DROP NOT NULL on {table}.{column}: the old version may now read NULLs",
                )
        elif sub == AT.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
            self._alter_type(stmt, schema, table, cmd.name or "", cmd.def_, new)
        elif sub == AT.AT_DropColumn:
            self._drop_column(stmt, state, table, cmd.name or "", new, phase)
        elif sub == AT.AT_DropConstraint:
            self._drop_constraint(stmt, schema, table, cmd.name or "", new, phase)
        elif sub == AT.AT_AttachPartition and isinstance(cmd.def_, ast.PartitionCmd):
            part = cmd.def_.name.relname if cmd.def_.name is not None else ""
            if not new and part not in self.tracker.validated_tables and not self.new(part):
                self.report(
                    "M027",
                    stmt,
                    f"ATTACH PARTITION {part} scans it to prove the bound, locking it and "
                    f"{table}: add a matching CHECK (NOT VALID, then VALIDATE) first",
                    "warning",
                )
        elif sub == AT.AT_DetachPartition and isinstance(cmd.def_, ast.PartitionCmd):
            part = cmd.def_.name.relname if cmd.def_.name is not None else ""
            if not cmd.def_.concurrent and not new:
                note = "" if self.version >= 140000 else " (CONCURRENTLY needs PostgreSQL 14)"
                self.report(
                    "M027",
                    stmt,
                    f"DETACH PARTITION {part} takes ACCESS EXCLUSIVE on {table}{note}",
                )
            elif cmd.def_.concurrent and self.version < 140000:
                self.report(
                    "M027",
                    stmt,
                    f"DETACH PARTITION ... CONCURRENTLY needs PostgreSQL 14 (server "
                    f"{self.version // 10000}): the statement fails",
                )
            elif cmd.def_.concurrent and unit.transactional:
                self.report(
                    "M003", stmt, "DETACH PARTITION CONCURRENTLY inside a transaction fails"
                )

    def _add_column(
        self, stmt: Stmt, unit: Unit, schema: str, table: str, col: ast.ColumnDef, new: bool
    ) -> None:
        name = col.colname or ""
        self.tracker.columns.add((table, name))
        if col.typeName is not None:
            self.tracker.column_types[(table, name)] = col.typeName
        self._column_type_rules(stmt, table, col)
        if new:
            return
        constraints = [c for c in col.constraints or () if isinstance(c, ast.Constraint)]
        kinds = {c.contype for c in constraints}
        default = next((c.raw_expr for c in constraints if c.contype == CT.CONSTR_DEFAULT), None)
        default = default if default is not None else col.raw_default
        if col.typeName is not None and type_name(col.typeName) in SERIAL_TYPES:
            self.report(
                "M013", stmt, f"adds {type_name(col.typeName)} column {table}.{name}: a rewrite"
            )
        if CT.CONSTR_IDENTITY in kinds or (col.identity and col.identity != "\x00"):
            self.report("M013", stmt, f"adds identity column {table}.{name}: a rewrite")
        for c in constraints:
            if c.contype == CT.CONSTR_GENERATED and c.generated_kind != "v":
                self.report("M013", stmt, f"adds stored generated column {table}.{name}: a rewrite")
            if c.contype == CT.CONSTR_FOREIGN and not c.skip_validation:
                self.report(
                    "M005",
                    stmt,
                    f"adds {table}.{name} with REFERENCES: the new foreign key is validated "
                    "by a scan while both tables are locked",
                )
            if c.contype == CT.CONSTR_CHECK and not c.skip_validation:
                self.report(
                    "M006",
                    stmt,
                    f"adds {table}.{name} with a CHECK: validated by a full scan under "
                    "ACCESS EXCLUSIVE",
                )
            if c.contype == CT.CONSTR_UNIQUE:
                self.report("M008", stmt, f"adds {table}.{name} UNIQUE: index built under AE")
            if c.contype == CT.CONSTR_PRIMARY:
                self.report("M009", stmt, f"adds {table}.{name} PRIMARY KEY: index built under AE")
        if default is not None and not _is_null(default):
            self._default_rule(stmt, table, name, default)
        not_null = col.is_not_null or CT.CONSTR_NOTNULL in kinds or CT.CONSTR_PRIMARY in kinds
        if not_null and (default is None or _is_null(default)):
            self.report(
                "M012",
                stmt,
                f"adds {table}.{name} NOT NULL with no DEFAULT: fails on existing rows, and the "
                "old version's INSERTs (which do not name it) fail",
            )

    def _default_rule(self, stmt: Stmt, table: str, column: str, default: ast.Node) -> None:
        if self.version < 110000:
            self.report(
                "M011",
                stmt,
                f"adds {table}.{column} with a DEFAULT: before PostgreSQL 11 (server "
                f"{self.version // 10000}) that rewrites the table",
            )
            return
        finder = _FuncNames()
        finder(default)
        names = set(finder.names)
        if names & VOLATILE_FUNCTIONS or finder.other:
            volatile = sorted(names & VOLATILE_FUNCTIONS) or ["a subquery"]
            self.report(
                "M011",
                stmt,
                f"adds {table}.{column} with a volatile DEFAULT ({', '.join(volatile)}): "
                "evaluated per row, a rewrite of the table",
            )
            return
        unknown = sorted(names - NONVOLATILE_FUNCTIONS)
        if not unknown:
            return
        verdict = self.live.volatile_functions(unknown) if self.live is not None else None
        if verdict:
            self.report(
                "M011",
                stmt,
                f"adds {table}.{column} with a DEFAULT calling a volatile function "
                f"({', '.join(unknown)}): a rewrite of the table",
            )
        elif verdict is None:
            self.report(
                "M011",
                stmt,
                f"adds {table}.{column} with a DEFAULT calling {', '.join(unknown)}; if it is "
                "volatile the table is rewritten (give --database-url to know)",
                "warning",
            )

    def _add_constraint(
        self,
        stmt: Stmt,
        state: _UnitState,
        schema: str,
        table: str,
        con: ast.Constraint,
        new: bool,
    ) -> None:
        name = con.conname or ""
        if con.skip_validation:
            state.added.add((table, name))
        if con.contype == CT.CONSTR_CHECK:
            column = _null_test_column(con.raw_expr)
            if column is not None:
                self.tracker.not_null_checks[(table, name)] = column
                if not con.skip_validation:
                    self.tracker.validated_not_null.add((table, column))
            if not con.skip_validation:
                self.tracker.validated_tables.add(table)
        if con.contype == CT.CONSTR_FOREIGN:
            self.tracker.foreign_keys.add((table, name))
        if new:
            return
        keys = _names(con.keys)
        if con.contype == CT.CONSTR_FOREIGN and not con.skip_validation:
            ref = con.pktable.relname if con.pktable is not None else "?"
            self.report(
                "M005",
                stmt,
                f"adds foreign key {name} on {table} -> {ref} validated at once: both tables "
                "locked through a full scan",
            )
        elif con.contype == CT.CONSTR_CHECK and not con.skip_validation:
            self.report(
                "M006",
                stmt,
                f"adds CHECK {name} on {table} validated at once: ACCESS EXCLUSIVE through a "
                "full scan",
            )
        elif con.contype == CT.CONSTR_UNIQUE and not con.indexname:
            self.report(
                "M008",
                stmt,
                f"adds UNIQUE {name} on {table}: its index is built under ACCESS EXCLUSIVE",
            )
            if self.live is not None and keys:
                self._report_duplicates(stmt, schema, table, [_quote(k) for k in keys], None)
        elif con.contype == CT.CONSTR_PRIMARY and con.indexname and self.live is not None:
            # USING INDEX still sets NOT NULL on its columns: a scan unless proven.
            for column in self.live.nullable_index_columns(schema, con.indexname) or []:
                if not self._not_null_proven(schema, table, column):
                    self.report(
                        "M009",
                        stmt,
                        f"PRIMARY KEY USING INDEX {con.indexname} makes {table}.{column} NOT "
                        "NULL, which scans the table under ACCESS EXCLUSIVE: validate a CHECK "
                        f"({column} IS NOT NULL) first",
                    )
        elif con.contype == CT.CONSTR_PRIMARY and not con.indexname:
            self.report(
                "M009",
                stmt,
                f"adds PRIMARY KEY {name} on {table}: index build and NOT NULL scan under "
                "ACCESS EXCLUSIVE",
            )
            if self.live is not None and keys:
                self._report_duplicates(stmt, schema, table, [_quote(k) for k in keys], None)
        elif con.contype == CT.CONSTR_EXCLUSION:
            self.report(
                "M025",
                stmt,
                f"adds EXCLUDE constraint {name} on {table}: built under ACCESS EXCLUSIVE and "
                "it cannot be NOT VALID",
            )
        elif con.contype == CT.CONSTR_NOTNULL and not con.skip_validation:
            for key in keys or [""]:
                self._set_not_null(stmt, schema, table, key, new)

    def _not_null_proven(self, schema: str, table: str, column: str) -> bool:
        """A validated CHECK (column IS NOT NULL) stands (PostgreSQL 12+ then skips the scan)."""
        if self.version < 120000:
            return False
        if (table, column) in self.tracker.validated_not_null:
            return True
        if self.live is None:
            return False
        return any(_null_test_of(e) == column for e in self.live.check_expressions(schema, table))

    def _set_not_null(self, stmt: Stmt, schema: str, table: str, column: str, new: bool) -> None:
        if new:
            return
        proven = self._not_null_proven(schema, table, column)
        if self.version < 120000:
            self.report(
                "M014",
                stmt,
                f"SET NOT NULL on {table}.{column} scans the table under ACCESS EXCLUSIVE; "
                f"before PostgreSQL 12 (server {self.version // 10000}) no CHECK avoids it",
            )
        elif not proven:
            self.report(
                "M014",
                stmt,
                f"SET NOT NULL on {table}.{column} with no validated CHECK ({column} IS NOT "
                "NULL) before it: a full scan under ACCESS EXCLUSIVE",
            )

    def _alter_type(
        self, stmt: Stmt, schema: str, table: str, column: str, col: ast.ColumnDef, new: bool
    ) -> None:
        target = col.typeName
        if target is None:
            return
        self._column_type_rules(stmt, table, col, column)
        old = self.tracker.column_types.get((table, column))
        self.tracker.column_types[(table, column)] = target
        if new:
            return
        if old is None and self.live is not None:
            text = self.live.column_type(schema, table, column)
            old = parse_type(text) if text else None
        using = col.raw_default is not None
        if old is not None:
            if binary_coercible(old, target) and not using:
                return
            self.report(
                "M016",
                stmt,
                f"changes {table}.{column} from {type_sql(old)} to {type_sql(target)}: not "
                "binary-coercible, so the table and its indexes are rewritten under ACCESS "
                "EXCLUSIVE",
            )
            return
        if not using and type_name(target) in ("text", "varchar"):
            self.report(
                "M016",
                stmt,
                f"changes {table}.{column} to {type_sql(target)}: without a rewrite only from "
                "varchar/text (give --database-url to know the current type)",
                "warning",
            )
            return
        self.report(
            "M016",
            stmt,
            f"changes the type of {table}.{column} to {type_sql(target)}: a rewrite under "
            "ACCESS EXCLUSIVE, and clients of the old type break",
        )

    def _drop_column(
        self,
        stmt: Stmt,
        state: _UnitState,
        table: str,
        column: str,
        new: bool,
        phase: LintPhase | None,
    ) -> None:
        state.dropped_columns.add((table, column))
        if new or (table, column) in self.tracker.columns:
            return
        if phase == "contract":
            return
        where = {
            "expand": "in the expand: the old version still reads and writes it",
            "rollback": "in a rollback, though the plan did not add it",
            None: "outside a contract step: the old version may still use it",
        }[phase]
        self.report(
            "M021",
            stmt,
            f"drops {table}.{column} {where}",
            "error" if phase else "warning",
        )

    def _drop_constraint(
        self,
        stmt: Stmt,
        schema: str,
        table: str,
        name: str,
        new: bool,
        phase: LintPhase | None,
    ) -> None:
        if new or phase == "contract":
            return
        known_fk = (table, name) in self.tracker.foreign_keys
        if known_fk:
            if phase == "rollback":
                return  # the plan added it; the rollback takes it away again
        elif self.live is None or self.live.constraint_kind(schema, table, name) != "f":
            return
        where = "in the expand" if phase == "expand" else "outside a contract step"
        self.report(
            "M022",
            stmt,
            f"drops foreign key {name} of {table} {where}: integrity the old version relies "
            "on is gone",
            "error" if phase else "warning",
        )

    def _column_type_rules(
        self, stmt: Stmt, table: str, col: ast.ColumnDef, column: str | None = None
    ) -> None:
        if col.typeName is None:
            return
        name = column or col.colname
        base = type_name(col.typeName)
        if base in ("varchar", "bpchar") and type_mods(col.typeName):
            self.report(
                "M017",
                stmt,
                f"{table}.{name} is {type_sql(col.typeName)}: changing the length later "
                "needs ACCESS EXCLUSIVE; use text with a CHECK on length",
            )
        if base == "json":
            self.report(
                "M026",
                stmt,
                f"{table}.{name} is json: no equality operator, DISTINCT and GROUP BY fail; "
                "use jsonb",
            )

    def _not_rerunnable(self, stmt: Stmt, what: str) -> None:
        self.report(
            "M030",
            stmt,
            f"{what}: it runs outside a transaction, so after a partial failure the rerun "
            "fails on it",
        )


def _is_zero(args: Any) -> bool:
    for arg in args or ():
        if isinstance(arg, ast.A_Const):
            value = arg.val
            if isinstance(value, ast.Integer) and value.ival == 0:
                return True
            if isinstance(value, ast.String) and (value.sval or "").strip() in ("0", "0ms", "0s"):
                return True
    return False


def _is_null(node: ast.Node) -> bool:
    return isinstance(node, ast.A_Const) and bool(node.isnull)


def _quote(name: str) -> str:
    return ident(name)


def statements_of(text: str) -> Iterator[tuple[ast.Node, str, int]]:
    """Each statement of SQL text: its parse tree, its text, and its character offset.

    Raises pglast's ParseError for text that does not parse.
    """
    for raw in pglast.parse_sql(text):
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        if raw.stmt is not None:
            yield raw.stmt, text[start:end].strip(), start
