"""The static checks of one query in one cell, on pglast's parse tree and a phase snapshot.

PREPARE proves names, types and functions; these catch what PREPARE cannot see:

- ``insert-not-null``: an INSERT that leaves out a NOT NULL column with no default;
- ``unsynced-write``: an old-version write to a column the plan renames or retypes with
  no sync trigger to carry the value to the new column;
- ``select-star``: ``SELECT *`` / ``RETURNING *`` on a table whose columns change (warning);
- ``view-write``: a write through a view that is not auto-updatable;
- ``on-conflict``: an ``ON CONFLICT ON CONSTRAINT`` whose constraint the plan drops (a
  column target is matched by the server's planner: `migrator.verify.probes`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pglast import ast

from migrator.ops.base import ChangedColumn
from migrator.ops.sql import walk_nodes
from migrator.pgtypes import rewrites
from migrator.plan.models import Plan
from migrator.verify.queries import Query, statement_nodes
from migrator.verify.report import Finding, query_finding
from migrator.verify.snapshot import DELETE_BIT, INSERT_BIT, UPDATE_BIT, Relation, Snapshot

# -- what the plan changes -----------------------------------------------------------------


@dataclass(frozen=True)
class ColumnChange:
    """A column the plan renames or retypes, and whether a sync trigger carries writes."""

    schema: str
    table: str
    column: str
    kind: Literal["rename", "retype", "copy"]
    detail: str
    carried: bool
    source: str
    fix: str


def column_changes(plan: Plan) -> list[ColumnChange]:
    """Every rename, retype and copy of a column the plan's expand makes, as each
    operation says (`Operation.column_changes`)."""
    schema = plan.schema_name
    changes: list[ColumnChange] = []
    unsynced: list[tuple[str, ChangedColumn]] = []
    triggers: set[tuple[str, str]] = set()
    for index, op in enumerate(plan.operations("expand")):
        where = f"expand[{index}] {op.op_name}"
        for change in op.column_changes():
            if change.phase != "expand":
                continue
            if change.kind == "trigger":
                triggers.add((change.schema or schema, change.table))
            elif change.kind in ("rename", "retype", "copy") and change.column is not None:
                if change.synced is None:
                    unsynced.append((where, change))
                else:
                    fix = "" if change.synced else _IN_PLACE_FIX
                    changes.append(_change(schema, change, change.synced, where, fix))
    # A trigger made by any raw step of the expand may carry the writes.
    for where, change in unsynced:
        carried = (change.schema or schema, change.table) in triggers
        fix = _COPY_FIX if change.kind == "copy" else _IN_PLACE_FIX
        changes.append(_change(schema, change, carried, where, fix))
    return changes


def _change(
    schema: str, change: ChangedColumn, carried: bool, where: str, fix: str
) -> ColumnChange:
    assert change.column is not None and change.kind in ("rename", "retype", "copy")
    return ColumnChange(
        change.schema or schema,
        change.table,
        change.column,
        change.kind,
        change.detail,
        carried,
        where,
        fix,
    )


_IN_PLACE_FIX = (
    "do not rename or retype a column in place while the old version runs: add the new "
    "column (add_column / alter_column with up:) and let a sync trigger carry the old "
    "version's writes; drop the old column in the contract"
)
_COPY_FIX = (
    "a one-time UPDATE copies only the rows there at expand time: fill the new column with "
    "add_column `up:` (or use rename_column / alter_column), whose trigger also carries what "
    "the old version writes later"
)


# -- walking the parse tree ------------------------------------------------------------------


def _returning(stmt: ast.Node) -> tuple[Any, ...]:
    clause = getattr(stmt, "returningClause", None)
    if clause is not None:
        return tuple(clause.exprs or ())
    return tuple(getattr(stmt, "returningList", None) or ())


def _is_star(target: Any) -> tuple[bool, str | None]:
    """(True, qualifier) for ``*`` / ``t.*`` in a target list."""
    val = getattr(target, "val", None)
    if isinstance(val, ast.ColumnRef) and val.fields and isinstance(val.fields[-1], ast.A_Star):
        names = [f.sval for f in val.fields[:-1] if isinstance(f, ast.String)]
        return True, names[-1] if names else None
    return False, None


def _from_relations(from_clause: Any) -> Iterator[tuple[ast.RangeVar, str]]:
    """The tables of a FROM list (not inside subqueries), with the name they go by."""
    for item in from_clause or ():
        if isinstance(item, ast.RangeVar):
            alias = item.alias.aliasname if item.alias is not None else item.relname
            yield item, str(alias)
        elif isinstance(item, ast.JoinExpr):
            yield from _from_relations((item.larg, item.rarg))


# -- the cell a query is checked in ------------------------------------------------------------


@dataclass
class CellContext:
    """What the static checks know of the cell: version, phase, and the snapshots."""

    version: Literal["old", "new"]
    version_label: str
    phase: str
    must_pass: bool
    snapshot: Snapshot
    home: Snapshot  # the schema the version was written for: old -> before, new -> contracted
    before: Snapshot
    changes: list[ColumnChange] = field(default_factory=list)


def static_findings(query: Query, ctx: CellContext) -> list[Finding]:
    """Every static finding of one parsed query in one cell."""
    if query.tree is None:
        return []
    statements = query.statements
    if statements is None:
        if query.nodes is None:
            query.nodes = list(walk_nodes(query.tree))
        statements = query.statements = statement_nodes(query.nodes)
    ctes = {
        n.ctename
        for n in statements
        if isinstance(n, ast.CommonTableExpr) and n.ctename is not None
    }
    findings: list[Finding] = []

    def resolve(rv: ast.RangeVar | None) -> Relation | None:
        if rv is None or rv.relname is None or (rv.schemaname is None and rv.relname in ctes):
            return None
        return ctx.snapshot.resolve(rv.schemaname, rv.relname)

    for node in statements:
        if isinstance(node, ast.InsertStmt):
            rel = resolve(node.relation)
            if rel is not None:
                findings += _insert_not_null(query, ctx, node, rel)
                findings += _view_write(query, ctx, rel, INSERT_BIT, "INSERT into")
                findings += _on_conflict(query, ctx, node, rel)
                findings += _unsynced(query, ctx, rel, _insert_columns(node, ctx, rel))
                findings += _star(query, ctx, _returning(node), [(rel, rel.name)], "RETURNING *")
        elif isinstance(node, ast.UpdateStmt):
            rel = resolve(node.relation)
            if rel is not None:
                findings += _view_write(query, ctx, rel, UPDATE_BIT, "UPDATE of")
                written = [
                    t.name for t in node.targetList or () if isinstance(t, ast.ResTarget) and t.name
                ]
                findings += _unsynced(query, ctx, rel, written)
                findings += _star(query, ctx, _returning(node), [(rel, rel.name)], "RETURNING *")
        elif isinstance(node, ast.DeleteStmt):
            rel = resolve(node.relation)
            if rel is not None:
                findings += _view_write(query, ctx, rel, DELETE_BIT, "DELETE from")
                findings += _star(query, ctx, _returning(node), [(rel, rel.name)], "RETURNING *")
        elif isinstance(node, ast.SelectStmt) and any(
            _is_star(t)[0] for t in node.targetList or ()
        ):
            tables = [
                (rel, alias)
                for rv, alias in _from_relations(node.fromClause)
                if (rel := resolve(rv)) is not None
            ]
            findings += _star(query, ctx, node.targetList or (), tables, "SELECT *")
    return _dedupe(findings)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        key = (f.check, f.reason)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


# -- the checks ---------------------------------------------------------------------------------


def _insert_columns(node: ast.InsertStmt, ctx: CellContext, rel: Relation) -> list[str]:
    """The columns an INSERT writes (all of them, positionally, without a column list)."""
    if node.cols:
        return [c.name for c in node.cols if isinstance(c, ast.ResTarget) and c.name]
    select = node.selectStmt
    if select is None:  # DEFAULT VALUES
        return []
    width: int | None = None
    if isinstance(select, ast.SelectStmt):
        if select.valuesLists:
            width = max(len(row) for row in select.valuesLists)
        elif select.targetList and not any(_is_star(t)[0] for t in select.targetList):
            width = len(select.targetList)
    names = [c.name for c in rel.columns]
    return names if width is None else names[:width]


def _insert_not_null(
    query: Query, ctx: CellContext, node: ast.InsertStmt, rel: Relation
) -> list[Finding]:
    if rel.kind not in ("r", "p"):
        return []
    select = node.selectStmt
    if (
        not node.cols
        and isinstance(select, ast.SelectStmt)
        and not select.valuesLists
        and select.targetList
        and any(_is_star(t)[0] for t in select.targetList)
    ):
        return []  # INSERT ... SELECT * : the width is the source table's; PREPARE checks it
    provided = set(_insert_columns(node, ctx, rel))
    missing = [c for c in rel.columns if c.required and c.name not in provided]
    if not missing:
        return []
    names = ", ".join(c.name for c in missing)
    if rel.before_insert_triggers:
        # A BEFORE INSERT trigger may fill the column (pagila's film.fulltext is filled so);
        # which columns it sets cannot be known from the catalog, so trust it.
        return []
    if ctx.version == "old" and ctx.phase == "contracted":
        fix = "run the contract only after the old version is retired"
    elif ctx.version == "old":
        fix = (
            f"the old version does not know {names}: add it nullable or with a default in the "
            "expand (add_column keeps it nullable until the contract, with `up:` to fill it)"
            if ctx.phase != "before"
            else f"the INSERT fails on the live schema already: write {names}"
        )
    elif ctx.phase == "before":
        fix = (
            "nothing to do if the new version ships after the expand; this is what breaks "
            "if it ships first"
        )
    else:
        fix = f"write {names} in the new version's INSERT, or give the column a default"
    return [
        query_finding(
            query,
            ctx,
            "insert-not-null",
            "error",
            f"INSERT into {rel.qualified} leaves out NOT NULL column(s) {names}, which have no "
            f"default at {ctx.phase}",
            fix,
        )
    ]


def _view_write(
    query: Query, ctx: CellContext, rel: Relation, bit: int, verb: str
) -> list[Finding]:
    if not rel.is_view or rel.updatable & bit:
        return []
    kind = "materialized view" if rel.kind == "m" else "view"
    return [
        query_finding(
            query,
            ctx,
            "view-write",
            "error",
            f"{verb} {rel.qualified}, a {kind} at {ctx.phase} that is not auto-updatable",
            f"keep {rel.name} a simple view over one table (auto-updatable) while the "
            f"{ctx.version} version writes to it, or give it INSTEAD OF triggers",
        )
    ]


def _on_conflict(
    query: Query, ctx: CellContext, node: ast.InsertStmt, rel: Relation
) -> list[Finding]:
    clause = node.onConflictClause
    infer = clause.infer if clause is not None else None
    if infer is None:
        return []
    before = ctx.before.resolve(rel.schema, rel.name)
    if before is None:
        return []
    if infer.conname:
        if infer.conname in before.constraints and infer.conname not in rel.constraints:
            return [_conflict_finding(query, ctx, rel, f"constraint {infer.conname}")]
        return []
    # A column or expression target is the planner's to match (verify.probes asks it).
    return []


def _conflict_finding(query: Query, ctx: CellContext, rel: Relation, what: str) -> Finding:
    return query_finding(
        query,
        ctx,
        "on-conflict",
        "error",
        f"ON CONFLICT on {rel.qualified} relies on {what}, which the plan drops before {ctx.phase}",
        f"keep {what} until no version's INSERT ... ON CONFLICT needs it, or change the "
        "conflict target to a unique index that stays",
    )


def _unsynced(query: Query, ctx: CellContext, rel: Relation, written: list[str]) -> list[Finding]:
    if ctx.version != "old" or ctx.phase != "expanded":
        return []
    findings = []
    for change in ctx.changes:
        if change.carried or (change.schema, change.table) != (rel.schema, rel.name):
            continue
        if change.kind == "retype" and _in_place_retype_keeps_writes(ctx, rel, change.column):
            continue
        if change.column in written:
            findings.append(
                query_finding(
                    query,
                    ctx,
                    "unsynced-write",
                    "error",
                    f"the old version writes {rel.name}.{change.column}, which the plan "
                    f"{change.detail} ({change.source}) with no sync trigger to carry the value "
                    "to the new version",
                    change.fix,
                )
            )
    return findings


def _in_place_retype_keeps_writes(ctx: CellContext, rel: Relation, column: str) -> bool:
    before = ctx.before.resolve(rel.schema, rel.name)
    old = before.column(column) if before is not None else None
    new = rel.column(column)
    if old is None or new is None:
        return False
    return retype_keeps_writes(old.type, new.type)


def retype_keeps_writes(old_type: str, new_type: str) -> bool:
    """True when a column retyped in place from ``old_type`` to ``new_type`` stores the
    old version's values unchanged: the change rewrites nothing (varchar -> text), as
    `migrator.pgtypes.rewrites` knows it; where it cannot tell, the finding stands."""
    return rewrites(old_type, new_type) is False


def _star(
    query: Query,
    ctx: CellContext,
    targets: tuple[Any, ...] | list[Any],
    tables: list[tuple[Relation, str]],
    what: str,
) -> list[Finding]:
    findings = []
    for target in targets:
        star, qualifier = _is_star(target)
        if not star:
            continue
        for rel, alias in tables:
            if qualifier is not None and qualifier not in (alias, rel.name):
                continue
            home = ctx.home.resolve(rel.schema, rel.name)
            if home is None or home.signature() == rel.signature():
                continue
            now = dict(rel.signature())
            then = dict(home.signature())
            added = [c for c in now if c not in then]
            gone = [c for c in then if c not in now]
            retyped = [c for c in now if c in then and now[c] != then[c]]
            parts = (
                ([f"adds {', '.join(added)}"] if added else [])
                + ([f"lacks {', '.join(gone)}"] if gone else [])
                + ([f"retypes {', '.join(retyped)}"] if retyped else [])
            )
            home_phase = "before" if ctx.version == "old" else "contracted"
            findings.append(
                query_finding(
                    query,
                    ctx,
                    "select-star",
                    "warning",
                    f"{what} on {rel.qualified}: at {ctx.phase} the table "
                    f"{'; '.join(parts) or 'reorders its columns'} compared with {home_phase}",
                    "name the columns the code reads instead of *",
                )
            )
    return findings


__all__ = [
    "CellContext",
    "ColumnChange",
    "column_changes",
    "retype_keeps_writes",
    "static_findings",
]
