"""What a write puts in each column, read from pglast's tree: an INSERT's rows or an
UPDATE's assignments, each value a literal, NULL, a parameter, DEFAULT or unknown."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, replace
from typing import Any, Literal

from pglast import ast
from pglast.enums import OnConflictAction, SetOperation
from pglast.stream import RawStream

from migrator.ops.sql import walk_nodes
from migrator.sqltext import literal
from migrator.verify.queries import Query
from migrator.verify.snapshot import Relation, Snapshot

Kind = Literal["literal", "null", "param", "unknown", "default"]


@dataclass(frozen=True)
class Value:
    """A value a write gives a column: a literal (its SQL), NULL, a parameter, DEFAULT,
    or something only the data knows (a column, a subquery)."""

    kind: Kind
    sql: str = ""


def _value(expr: Any) -> Value:
    if isinstance(expr, ast.SetToDefault):
        return Value("default")
    if isinstance(expr, ast.ParamRef):
        return Value("param")
    if isinstance(expr, ast.A_Const):
        # The common literal, written out without pglast's deparser (a thousand times
        # cheaper): a number as the parser read it, a string quoted by the library.
        val = expr.val
        if expr.isnull:
            return Value("null")
        if isinstance(val, ast.Integer):
            return Value("literal", str(val.ival))
        if isinstance(val, ast.Float):
            return Value("literal", str(val.fval))
        if isinstance(val, ast.String):
            return Value("literal", literal(val.sval))
    nodes = list(walk_nodes(expr))
    if any(isinstance(n, ast.ParamRef) for n in nodes):
        return Value("param")
    if any(isinstance(n, ast.ColumnRef | ast.SubLink | ast.MultiAssignRef) for n in nodes):
        return Value("unknown")
    bare = expr.arg if isinstance(expr, ast.TypeCast) else expr
    if isinstance(bare, ast.A_Const) and bare.isnull:
        return Value("null")
    return Value("literal", str(RawStream()(expr)))


@dataclass
class Write:
    """An INSERT's rows or an UPDATE's assignments to one relation."""

    relation: Relation
    verb: Literal["insert", "update"]
    rows: list[dict[str, Value]]  # column -> value; an INSERT's omitted columns are absent
    conflict: frozenset[str] | None = None  # ON CONFLICT columns (empty: no target)
    distinct: bool = False  # rows the same in every column are one (UNION, DISTINCT)
    selects: bool = False  # an INSERT ... SELECT ... FROM: as many rows as the data gives
    via: Relation | None = None  # the view written through, when not the table itself
    upsert: bool = False  # an UPDATE that is an INSERT's ON CONFLICT DO UPDATE
    # An INSERT ... SELECT whose rows the server computes without table data (constants,
    # VALUES, generate_series: no table, subquery or parameter): the SELECT's SQL, the
    # columns it fills in order, and the functions it calls (judged by volatility there).
    source: str | None = None
    names: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()

    @property
    def verb_phrase(self) -> str:
        """How messages name the write: ``INSERT into``, ``UPDATE of``."""
        if self.upsert:
            return "INSERT ... ON CONFLICT DO UPDATE of"
        return "INSERT into" if self.verb == "insert" else "UPDATE of"

    @property
    def target(self) -> str:
        """The relation as the query names it, for messages: a view with its table."""
        if self.via is None:
            return self.relation.qualified
        return f"{self.via.qualified} (a view of {self.relation.qualified})"


# In an ON CONFLICT target's set: the target has an expression (``(lower(email))``).
EXPRESSION = "\x01expression"


def named(constraint: str) -> frozenset[str]:
    """An ``ON CONFLICT ON CONSTRAINT`` target, apart from any column name."""
    return frozenset({"\x00" + constraint})


def _insert_write(node: ast.InsertStmt, rel: Relation) -> Write | None:
    if node.cols:
        names = [c.name for c in node.cols if isinstance(c, ast.ResTarget) and c.name]
    else:
        names = [c.name for c in rel.columns]
    select = node.selectStmt
    rows: list[dict[str, Value]] | None
    distinct = selects = False
    if select is None:
        rows = [{}]  # DEFAULT VALUES
    elif isinstance(select, ast.SelectStmt):
        found = _select_rows(select, names, bool(node.cols))
        if found is None:
            return None
        rows, distinct = found
        selects = _from_data(select)
    else:
        return None
    source: str | None = None
    functions: tuple[str, ...] = ()
    if (selects or distinct) and isinstance(select, ast.SelectStmt) and not select.valuesLists:
        nodes = list(walk_nodes(select))
        if not any(isinstance(n, ast.RangeVar | ast.SubLink | ast.ParamRef) for n in nodes):
            source = str(RawStream()(select))
            functions = tuple(
                sorted(
                    {
                        str(n.funcname[-1].sval)
                        for n in nodes
                        if isinstance(n, ast.FuncCall)
                        and n.funcname
                        and isinstance(n.funcname[-1], ast.String)
                    }
                )
            )
    conflict: frozenset[str] | None = None
    clause = node.onConflictClause
    if clause is not None:
        infer = clause.infer
        elems = (infer.indexElems or ()) if infer is not None else ()
        conflict = frozenset(e.name for e in elems if isinstance(e, ast.IndexElem) and e.name)
        if any(isinstance(e, ast.IndexElem) and not e.name for e in elems):
            conflict |= {EXPRESSION}  # a target over expressions is not "no target"
        if infer is not None and infer.conname:
            conflict = named(infer.conname)
    return Write(
        rel,
        "insert",
        rows,
        conflict,
        distinct,
        selects,
        source=source,
        names=tuple(names),
        functions=functions,
    )


def _from_data(select: ast.SelectStmt) -> bool:
    """True when some arm of the SELECT reads a FROM list (its row count is the data's)."""
    if select.op != SetOperation.SETOP_NONE:
        # INTERSECT / EXCEPT keep some of the left arm's rows: the right arm's count not.
        arms = (
            (select.larg, select.rarg) if select.op == SetOperation.SETOP_UNION else (select.larg,)
        )
        return any(_from_data(arm) for arm in arms if arm is not None)
    return bool(select.fromClause)


def _select_rows(
    select: ast.SelectStmt, names: list[str], listed: bool
) -> tuple[list[dict[str, Value]], bool] | None:
    """The rows an INSERT's VALUES or SELECT gives, one per VALUES row or SELECT arm, and
    whether a set operation drops duplicate rows; None when the columns cannot be told
    (``SELECT *`` without a column list).

    A constant in a SELECT's target list is the value of every row it selects, FROM or
    not; a column of the FROM list is the data's (unknown)."""
    if select.valuesLists:
        return [
            {n: _value(e) for n, e in zip(names, row, strict=False)} for row in select.valuesLists
        ], False
    op = select.op
    if op != SetOperation.SETOP_NONE:
        assert select.larg is not None and select.rarg is not None
        left = _select_rows(select.larg, names, listed)
        if left is None:
            return None
        distinct = not select.all
        if op == SetOperation.SETOP_UNION:
            right = _select_rows(select.rarg, names, listed)
            if right is None:
                return None
            return left[0] + right[0], distinct or left[1] or right[1]
        return left[0], True  # INTERSECT / EXCEPT: some of the left arm's rows
    if not select.targetList:
        return None
    targets = [t.val for t in select.targetList if isinstance(t, ast.ResTarget)]
    if any(isinstance(n, ast.A_Star) for t in targets for n in walk_nodes(t)):
        # The width is the source's: the listed columns are written, with the data's values.
        return ([{n: Value("unknown") for n in names}], False) if listed else None
    return [{n: _value(e) for n, e in zip(names, targets, strict=False)}], bool(
        select.distinctClause
    )


def _update_write(targets: Any, rel: Relation, upsert: bool = False) -> Write:
    """An UPDATE's SET list, or an upsert's ON CONFLICT DO UPDATE SET list."""
    row: dict[str, Value] = {}
    for t in targets or ():
        if not isinstance(t, ast.ResTarget) or not t.name:
            continue
        val = t.val
        if isinstance(val, ast.MultiAssignRef):
            source = val.source
            if isinstance(source, ast.RowExpr) and source.args and val.colno:
                row[t.name] = _value(source.args[val.colno - 1])
            else:
                row[t.name] = Value("unknown")
        else:
            row[t.name] = _value(val)
    return Write(rel, "update", [row], upsert=upsert)


def query_nodes(query: Query) -> list[ast.Node]:
    """Every node of the query's tree, walked once and kept on the query."""
    if query.nodes is None:
        query.nodes = list(walk_nodes(query.tree))
    return query.nodes


def may_write(query: Query) -> bool:
    """An INSERT, UPDATE or DELETE, or a statement whose WITH may hold one: the only ones
    probed."""
    return _writes_in(query.tree)


def _writes_in(tree: Any) -> bool:
    if isinstance(tree, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
        return True
    with_clause = getattr(tree, "withClause", None)
    ctes = with_clause.ctes if with_clause is not None else None
    return any(_writes_in(c.ctequery) for c in ctes or () if isinstance(c, ast.CommonTableExpr))


def through(rel: Relation, snapshot: Snapshot) -> tuple[Relation | None, dict[str, str]]:
    """The table a write to ``rel`` lands in, and the table's column under each of the
    relation's: a table is its own; an auto-updatable view is its base table's (through
    views over views), such as the view `rename_table` leaves under the old name."""
    mapping = {c.name: c.name for c in rel.columns}
    for _ in range(16):  # views over views, never a loop in PostgreSQL
        if rel.kind in ("r", "p"):
            return rel, mapping
        base = snapshot.by_oid.get(rel.base_oid) if rel.base_oid is not None else None
        if rel.kind != "v" or base is None:
            return None, {}
        under = {c.name: b for c, b in zip(rel.columns, rel.base_columns, strict=True) if b}
        mapping = {v: under[c] for v, c in mapping.items() if c in under}
        rel = base
    return None, {}


def _onto(write: Write, base: Relation, mapping: dict[str, str]) -> Write:
    """A write through a view as the base table receives it: the view's column names
    mapped to the table's; a column the INSERT leaves out that has a default on the view
    gets that default, which is not the table's (so its value is unknown here)."""
    view = write.relation
    rows = []
    for row in write.rows:
        onto = {mapping[c]: v for c, v in row.items() if c in mapping}
        for col in view.columns:
            if col.has_default and col.name in mapping:
                value = row.get(col.name)
                if (value is None and write.verb == "insert") or (
                    value is not None and value.kind == "default"
                ):
                    onto[mapping[col.name]] = Value("unknown")  # the view's default
        rows.append(onto)
    conflict = write.conflict
    if conflict is not None and not any(c.startswith("\x00") for c in conflict):
        conflict = frozenset(mapping.get(c, c) for c in conflict)
    names = tuple(mapping.get(n, "") for n in write.names)  # "": no column of the table
    return replace(write, relation=base, rows=rows, conflict=conflict, via=view, names=names)


def writes(
    query: Query, snapshot: Snapshot, only: Container[tuple[str, str]] | None = None
) -> list[Write]:
    """The INSERTs and UPDATEs of a query on tables of the phase (those in ``only``, when
    given), with their values; a write through an auto-updatable view is its table's."""
    if query.tree is None:
        return []
    nodes = query_nodes(query)
    ctes = {n.ctename for n in nodes if isinstance(n, ast.CommonTableExpr) and n.ctename}
    out: list[Write] = []
    for node in nodes:
        if not isinstance(node, ast.InsertStmt | ast.UpdateStmt):
            continue
        rv = node.relation
        if rv is None or rv.relname is None or (rv.schemaname is None and rv.relname in ctes):
            continue
        rel = snapshot.resolve(rv.schemaname, rv.relname)
        if rel is None:
            continue
        base, mapping = through(rel, snapshot)
        if base is None:
            continue
        if only is not None and (base.schema, base.name) not in only:
            continue
        found: list[Write] = []
        if isinstance(node, ast.InsertStmt):
            write = _insert_write(node, rel)
            if write is not None:
                found.append(write)
            clause = node.onConflictClause
            if clause is not None and clause.action == OnConflictAction.ONCONFLICT_UPDATE:
                # The row that conflicts is updated instead: its SET list is a write too.
                found.append(_update_write(clause.targetList, rel, upsert=True))
        else:
            found.append(_update_write(node.targetList, rel))
        out.extend(w if base is rel else _onto(w, base, mapping) for w in found)
    return out


__all__ = [
    "EXPRESSION",
    "Kind",
    "Value",
    "Write",
    "may_write",
    "named",
    "query_nodes",
    "through",
    "writes",
]
