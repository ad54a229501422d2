"""REINDEX, VACUUM, CLUSTER and REFRESH MATERIALIZED VIEW: rules M028 and M003."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pglast import ast, enums

from migrator.lint.checks.locks import vacuum_full
from migrator.lint.model import LintPhase, Stmt, Unit, UnitState, option_on, rel
from migrator.lint.registry import on

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer


@on(ast.ReindexStmt)
def reindex(a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None) -> None:
    """Rule 28: REINDEX without CONCURRENTLY; M003: REINDEX CONCURRENTLY in a transaction."""
    node = stmt.node
    assert isinstance(node, ast.ReindexStmt)
    concurrent = option_on(node.params, "concurrently")
    target = rel(node.relation) if node.relation is not None else (node.name or "")
    if node.kind == enums.ReindexObjectType.REINDEX_OBJECT_SYSTEM:
        # PostgreSQL refuses to reindex system catalogs concurrently: no safe form here.
        a.report(
            "M028",
            stmt,
            "REINDEX SYSTEM locks the system catalogs, which every query reads, and "
            + (
                "fails with CONCURRENTLY (PostgreSQL cannot reindex catalogs concurrently)"
                if concurrent
                else "has no CONCURRENTLY form"
            )
            + ": it belongs in a maintenance window, not in a release",
        )
        return
    if not concurrent:
        if node.relation is not None and a.new(rel(node.relation)):
            return
        note = "" if a.version >= 120000 else " (no CONCURRENTLY before PostgreSQL 12)"
        a.report("M028", stmt, f"REINDEX {target} blocks writes for the rebuild{note}")
    elif a.version < 120000:
        a.report(
            "M028",
            stmt,
            f"REINDEX CONCURRENTLY needs PostgreSQL 12 (server {a.version // 10000}): "
            "the statement fails",
        )
    elif unit.transactional:
        a.report("M003", stmt, "REINDEX CONCURRENTLY inside a transaction fails")


@on(ast.VacuumStmt)
def vacuum(a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None) -> None:
    """Rule 3: VACUUM in a transaction; M028: VACUUM FULL."""
    node = stmt.node
    assert isinstance(node, ast.VacuumStmt)
    if node.is_vacuumcmd and unit.transactional:
        a.report("M003", stmt, "VACUUM cannot run inside a transaction")
    if vacuum_full(node):
        tables = [rel(r.relation) for r in node.rels or () if r.relation is not None]
        if not tables or any(not a.new(t) for t in tables):
            a.report(
                "M028",
                stmt,
                f"VACUUM FULL {', '.join(tables) or '(every table)'} holds ACCESS EXCLUSIVE "
                "through a full rewrite",
            )


@on(ast.ClusterStmt)
def cluster(a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None) -> None:
    """Rule 28: CLUSTER."""
    node = stmt.node
    assert isinstance(node, ast.ClusterStmt)
    table = rel(node.relation) if node.relation is not None else "(every table)"
    if node.relation is None or not a.new(table):
        a.report("M028", stmt, f"CLUSTER {table} holds ACCESS EXCLUSIVE through a rewrite")


@on(ast.RefreshMatViewStmt)
def refresh_matview(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 28: REFRESH MATERIALIZED VIEW without CONCURRENTLY."""
    node = stmt.node
    assert isinstance(node, ast.RefreshMatViewStmt)
    name = rel(node.relation)
    if not node.concurrent and name not in a.tracker.matviews:
        a.report(
            "M028",
            stmt,
            f"REFRESH MATERIALIZED VIEW {name} without CONCURRENTLY blocks its readers",
        )
