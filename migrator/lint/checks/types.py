"""Enums and domains: rules M018 (domain CHECK) and M024 (enum changes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pglast import ast, enums

from migrator.lint.model import LintPhase, Stmt, Unit, UnitState, names, strings
from migrator.lint.registry import on

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer

CT = enums.ConstrType


@on(ast.CreateEnumStmt)
def create_enum(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Remember the type: changing it later in the plan is not held to M024."""
    node = stmt.node
    assert isinstance(node, ast.CreateEnumStmt)
    a.tracker.types.add(names(node.typeName)[-1])


@on(ast.CreateDomainStmt)
def create_domain(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 18: a domain with a CHECK."""
    node = stmt.node
    assert isinstance(node, ast.CreateDomainStmt)
    name = names(node.domainname)[-1]
    a.tracker.types.add(name)
    if any(
        isinstance(c, ast.Constraint) and c.contype == CT.CONSTR_CHECK
        for c in node.constraints or ()
    ):
        a.report(
            "M018",
            stmt,
            f"domain {name} has a CHECK: changing it later revalidates every column that "
            "uses the domain",
            "warning",
        )


@on(ast.AlterDomainStmt)
def alter_domain(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 18: a CHECK added to an existing domain (NOT VALID scans nothing)."""
    node = stmt.node
    assert isinstance(node, ast.AlterDomainStmt)
    name = names(node.typeName)[-1]
    constraint = node.def_
    if (
        node.subtype == "C"
        and isinstance(constraint, ast.Constraint)
        and constraint.contype == CT.CONSTR_CHECK
        and not constraint.skip_validation  # NOT VALID: only new values are checked
        and name not in a.tracker.types
    ):
        a.report(
            "M018",
            stmt,
            f"adds a CHECK to domain {name}: every column of every table using it is "
            "scanned to validate it",
            "error",
        )


@on(ast.AlterEnumStmt)
def alter_enum(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 24: RENAME VALUE, ADD VALUE in a transaction before 12, BEFORE/AFTER; M030."""
    node = stmt.node
    assert isinstance(node, ast.AlterEnumStmt)
    name = names(node.typeName)[-1]
    if node.oldVal:
        a.report(
            "M024",
            stmt,
            f"renames value {node.oldVal!r} of enum {name}: the running application still "
            "writes and compares the old label",
        )
        return
    if name in a.tracker.types:
        return
    if unit.transactional and a.version < 120000:
        a.report(
            "M024",
            stmt,
            f"ALTER TYPE {name} ADD VALUE inside a transaction fails before PostgreSQL 12 "
            f"(server {a.version // 10000})",
        )
    elif unit.transactional and node.newVal:
        state.new_enum_values[node.newVal] = name
    if node.newValNeighbor:
        where = "AFTER" if node.newValIsAfter else "BEFORE"
        a.report(
            "M024",
            stmt,
            f"adds {node.newVal!r} {where} {node.newValNeighbor!r}: comparisons and ORDER BY "
            f"over {name} change meaning for the running application",
            "warning",
        )
    if not unit.transactional and not node.skipIfNewValExists:
        a.not_rerunnable(stmt, f"ALTER TYPE {name} ADD VALUE without IF NOT EXISTS")


@on(ast.Node, stage="before")
def new_enum_value_used(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 24: a value ADD VALUE added cannot be used before its transaction commits."""
    if not state.new_enum_values or isinstance(stmt.node, ast.AlterEnumStmt):
        return
    for value in strings(stmt.node):
        if value in state.new_enum_values:
            a.report(
                "M024",
                stmt,
                f"uses {value!r}, which this transaction added to enum "
                f"{state.new_enum_values[value]}: PostgreSQL refuses it until the ADD "
                "VALUE commits (unsafe use of new value)",
            )
            return
