"""``constraint-write`` on the referenced side: a FOREIGN KEY a phase adds with ON DELETE
(or ON UPDATE) NO ACTION or RESTRICT makes a DELETE of the referenced table's rows (or an
UPDATE of its key) fail while a referencing row remains. Whether one remains is the
data's, so it is a warning; CASCADE, SET NULL and SET DEFAULT act instead of refusing."""

from __future__ import annotations

from pglast import ast

from migrator.verify.probes.cell import CellProbe
from migrator.verify.probes.writes import query_nodes, through
from migrator.verify.queries import Query
from migrator.verify.snapshot import Constraint, Relation

# referenced oid -> (table, FK, refuses a DELETE anew, refuses a key UPDATE anew)
Incoming = dict[int, list[tuple[Relation, Constraint, bool, bool]]]

_REFUSES = ("a", "r")
_ACTION = {"a": "NO ACTION", "r": "RESTRICT"}


def incoming(added: dict[int, tuple[Relation, list[Constraint], list[Constraint]]]) -> Incoming:
    """The foreign keys among ``added`` (table oid -> the table, its new constraints, its
    constraints at the phase before) that refuse a DELETE or a key UPDATE on the table
    they reference, by that table. A key the table had already refusing over the same
    columns (pagila's store.manager_staff_id) refused it before: nothing new."""
    out: Incoming = {}
    for rel, constraints, before in added.values():
        for con in constraints:
            if con.kind != "f" or con.ref_oid is None:
                continue
            had = [
                p
                for p in before
                if p.kind == "f"
                and (p.ref_oid, p.ref_columns, p.columns)
                == (con.ref_oid, con.ref_columns, con.columns)
            ]
            deletes = con.on_delete in _REFUSES and not any(p.on_delete in _REFUSES for p in had)
            updates = con.on_update in _REFUSES and not any(p.on_update in _REFUSES for p in had)
            if deletes or updates:
                out.setdefault(con.ref_oid, []).append((rel, con, deletes, updates))
    return out


def reference_findings(cell: CellProbe, query: Query, refs: Incoming) -> None:
    """A warning for each DELETE (or key UPDATE) of ``query`` on a table an added foreign
    key references."""
    nodes = query_nodes(query)
    ctes = {n.ctename for n in nodes if isinstance(n, ast.CommonTableExpr) and n.ctename}
    for node in nodes:
        if not isinstance(node, ast.DeleteStmt | ast.UpdateStmt):
            continue
        rv = node.relation
        if rv is None or rv.relname is None or (rv.schemaname is None and rv.relname in ctes):
            continue
        rel = cell.snapshot.resolve(rv.schemaname, rv.relname)
        base, mapping = through(rel, cell.snapshot) if rel is not None else (None, {})
        if rel is None or base is None or base.oid not in refs:
            continue
        target = base.qualified if rel is base else f"{rel.qualified} (a view of {base.qualified})"
        if isinstance(node, ast.DeleteStmt):
            for child, con, deletes, _ in refs[base.oid]:
                if deletes:
                    _warn(cell, query, f"DELETE from {target}", child, con, con.on_delete)
            continue
        written = {
            mapping[t.name]
            for t in node.targetList or ()
            if isinstance(t, ast.ResTarget) and t.name in mapping
        }
        for child, con, _, updates in refs[base.oid]:
            keys = [c for c in con.ref_columns if c in written]
            if keys and updates:
                verb = f"UPDATE of {', '.join(keys)} on {target}"
                _warn(cell, query, verb, child, con, con.on_update)


def _warn(
    cell: CellProbe, query: Query, verb: str, child: Relation, con: Constraint, action: str
) -> None:
    by = "the expand" if cell.version == "old" else "the contract"
    event = "DELETE" if verb.startswith("DELETE") else "UPDATE"
    cell.add(
        query,
        "constraint-write",
        "warning",
        f"{verb}: FOREIGN KEY constraint {con.name} on {child.qualified} ({con.definition}), "
        f"which {by} adds, is ON {event} {_ACTION[action]}: the statement fails where a row "
        f"of {child.qualified} still references a row it "
        f"{'deletes' if event == 'DELETE' else 'changes'}",
        f"remove (or re-point) the referencing rows of {child.qualified} first, give the foreign key "
        f"ON {event} CASCADE / SET NULL if that is what the rows mean, or add it in the "
        "contract once the old version is retired",
    )


__all__ = ["Incoming", "incoming", "reference_findings"]
