"""``on-conflict``: each upsert that PREPAREd is planned (``EXPLAIN EXECUTE`` with NULL
parameters), so a target no unique index or constraint matches at the phase is found as
PostgreSQL finds it."""

from __future__ import annotations

import itertools
from typing import Any

from pglast import ast
from pglast.stream import RawStream

from migrator.verify.probes.cell import CellProbe
from migrator.verify.probes.server import Outcome, Probe
from migrator.verify.probes.writes import query_nodes
from migrator.verify.queries import Query

_names = itertools.count(1)


def conflict_probe(cell: CellProbe, query: Query, probes: list[Probe], handlers: list[Any]) -> None:
    tree = query.tree
    if isinstance(tree, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt) and not tree.withClause:
        if getattr(tree, "onConflictClause", None) is None:
            return  # the common write: no walk
    nodes = query_nodes(query)
    for node in nodes:
        if not isinstance(node, ast.InsertStmt) or node.onConflictClause is None:
            continue
        infer = node.onConflictClause.infer
        if infer is None or infer.conname:
            continue  # no target (any constraint) or a named one: PREPARE resolves those
        params = max(
            (n.number for n in nodes if isinstance(n, ast.ParamRef) and n.number), default=0
        )
        name = f"migrator_probe_{next(_names)}"
        args = f"({', '.join(['NULL'] * params)})" if params else ""
        probes.append(Probe([f"PREPARE {name} AS {query.sql}", f"EXPLAIN EXECUTE {name}{args}"]))
        rv = node.relation
        handlers.append(lambda o, q=query, n=node, rv=rv: _conflict_outcome(cell, q, n, rv, o))
        return  # one ON CONFLICT per statement is what PostgreSQL allows at top level


def _conflict_outcome(
    cell: CellProbe, query: Query, node: ast.InsertStmt, rv: ast.RangeVar, outcome: Outcome
) -> None:
    if outcome.state != "42P10":
        return
    assert node.onConflictClause is not None and node.onConflictClause.infer is not None
    infer = node.onConflictClause.infer
    elems = [e for e in infer.indexElems or () if isinstance(e, ast.IndexElem)]
    target = "(" + ", ".join(str(RawStream()(e)) for e in elems) + ")"
    if infer.whereClause is not None:
        target += f" WHERE {RawStream()(infer.whereClause)}"
    columns = frozenset(e.name for e in elems if e.name)
    rel = cell.snapshot.resolve(rv.schemaname, rv.relname or "")
    was = cell.before.resolve(rv.schemaname, rv.relname or "")
    where = rel.qualified if rel is not None else str(rv.relname)
    had = [n for n, cols in was.unique_indexes if cols == columns] if was is not None else []
    partial = (
        [(n, pred) for n, cols, pred in rel.partial_unique if cols == columns]
        if rel is not None
        else []
    )
    if had and cell.phase != "before":
        what = f"unique index {', '.join(had)}"
        reason = (
            f"ON CONFLICT on {where} relies on {what}, which the plan drops before {cell.phase}"
        )
        fix = (
            f"keep {what} until no version's INSERT ... ON CONFLICT needs it, or change the "
            "conflict target to a unique index that stays"
        )
    elif partial:
        index, pred = partial[0]
        reason = (
            f"ON CONFLICT {target} on {where} matches no unique index or constraint at "
            f"{cell.phase}: unique index {index} is partial (WHERE {pred}), and a target "
            "must repeat its predicate"
        )
        fix = f"write the target as ON CONFLICT {target.split(' WHERE ')[0]} WHERE {pred}"
    else:
        reason = (
            f"ON CONFLICT {target} on {where} matches no unique index or constraint at "
            f"{cell.phase} (the server plans the upsert and finds no arbiter)"
        )
        fix = (
            "give the table a unique index or constraint on exactly the target's columns by "
            "this phase (create_index unique: true / add_unique under expand:), or change the "
            "target"
        )
    cell.add(query, "on-conflict", "error", reason, fix)


__all__ = ["conflict_probe"]
