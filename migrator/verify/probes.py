"""What PREPARE cannot see, asked of the server itself in one round trip per cell.

- ``on-conflict``: the planner, not PREPARE, picks an ``ON CONFLICT`` arbiter; each
  upsert that PREPAREd is planned (``EXPLAIN EXECUTE`` with NULL parameters), so a
  target no unique index or constraint matches at the phase is found as PostgreSQL
  finds it (a partial index whose predicate the target does not repeat, an index the
  plan drops, a write through `rename_table`'s view, which takes the table's indexes);
- ``constraint-write``: a CHECK, FOREIGN KEY, UNIQUE or NOT NULL that the expand adds
  (held against the old version's INSERT/UPDATE) or the contract adds (against the new
  version's): a literal the constraint rejects is an error, the CHECK evaluated by the
  server on the written values; a parameter that decides is a warning for the old
  version only (the new version was written for the schema after the contract, so its
  parameters are taken to be meant for it);
- ``sync-convert``: a literal a version writes that migrator's sync trigger cannot
  convert (``up`` or the retype's cast): the write is run, rolled back, and an error
  raised inside the trigger function is reported.

The values written are read from pglast's tree; every evaluation is the server's, in a
subtransaction of a transaction that is rolled back.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from pglast import ast
from pglast.stream import RawStream

from migrator.ops.sql import walk_nodes
from migrator.sqltext import ident, literal
from migrator.verify.queries import Query
from migrator.verify.report import Finding, Severity
from migrator.verify.snapshot import Constraint, Relation, Snapshot

# Each probe runs its statements in a subtransaction that is always undone (a success
# raises MGRZZ to roll it back), so one probe's rows never meet the next's; the error of
# a failing probe is kept with its context (which function raised it).
_PROBE_FUNCTION = """CREATE OR REPLACE FUNCTION pg_temp.migrator_probe(items jsonb)
RETURNS TABLE(k int, value text, state text, message text, context text)
LANGUAGE plpgsql AS $migrator_probe$
DECLARE
  s text;
  ctx text;
BEGIN
  FOR i IN 0 .. jsonb_array_length(items) - 1 LOOP
    k := i; value := NULL; state := NULL; message := NULL; context := NULL;
    BEGIN
      FOR s IN SELECT jsonb_array_elements_text(items -> i -> 'run') LOOP
        EXECUTE s;
      END LOOP;
      IF items -> i ->> 'eval' IS NOT NULL THEN
        EXECUTE items -> i ->> 'eval' INTO value;
      END IF;
      RAISE EXCEPTION USING ERRCODE = 'MGRZZ';
    EXCEPTION WHEN OTHERS THEN
      IF SQLSTATE <> 'MGRZZ' THEN
        GET STACKED DIAGNOSTICS ctx = PG_EXCEPTION_CONTEXT;
        state := SQLSTATE; message := SQLERRM; context := ctx;
      END IF;
    END;
    RETURN NEXT;
  END LOOP;
END
$migrator_probe$"""

_names = itertools.count(1)


@dataclass
class Probe:
    """Statements to run (``run``), then optionally one whose single value is read."""

    run: list[str]
    eval: str | None = None


@dataclass
class Outcome:
    """What a probe gave: the value read, or the error and its context."""

    value: str | None
    state: str | None
    message: str | None
    context: str | None


class ProbesFailed(Exception):
    """The probe function could not run on this server (no TEMP privilege, say)."""


def run_probes(conn: psycopg.Connection[Any], probes: list[Probe]) -> list[Outcome]:
    """Every probe, in one message to the server; the transaction is rolled back.

    A probe's own error is its outcome; `ProbesFailed` when the probing itself fails."""
    if not probes:
        return []
    payload = json.dumps([{"run": p.run, "eval": p.eval} for p in probes])
    message = (
        _PROBE_FUNCTION
        + ";\nSELECT k, value, state, message, context FROM pg_temp.migrator_probe("
        + psycopg.sql.Literal(payload).as_string(conn)
        + "::jsonb) ORDER BY k"
    )
    try:
        with conn.cursor() as cur:
            cur.execute(message.encode())
            cur.nextset()  # past CREATE FUNCTION's result, to the SELECT's
            rows = cur.fetchall()
    except psycopg.Error as exc:
        raise ProbesFailed(str(exc).strip().splitlines()[0]) from exc
    finally:
        conn.rollback()
    return [Outcome(r[1], r[2], r[3], r[4]) for r in rows]


# -- what a write puts in each column -------------------------------------------------------

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


def _named(constraint: str) -> frozenset[str]:
    """An ``ON CONFLICT ON CONSTRAINT`` target, apart from any column name."""
    return frozenset({"\x00" + constraint})


def _insert_write(node: ast.InsertStmt, rel: Relation) -> Write | None:
    if node.cols:
        names = [c.name for c in node.cols if isinstance(c, ast.ResTarget) and c.name]
    else:
        names = [c.name for c in rel.columns]
    select = node.selectStmt
    rows: list[dict[str, Value]] = []
    if select is None:
        rows = [{}]  # DEFAULT VALUES
    elif isinstance(select, ast.SelectStmt) and select.valuesLists:
        for row in select.valuesLists:
            rows.append({n: _value(e) for n, e in zip(names, row, strict=False)})
    elif isinstance(select, ast.SelectStmt) and select.targetList and select.op == 0:
        targets = [t.val for t in select.targetList if isinstance(t, ast.ResTarget)]
        if any(isinstance(n, ast.A_Star) for t in targets for n in walk_nodes(t)):
            return None
        many = bool(select.fromClause)  # the rows are the data's
        rows.append(
            {
                n: Value("unknown") if many else _value(e)
                for n, e in zip(names, targets, strict=False)
            }
        )
    else:
        return None
    conflict: frozenset[str] | None = None
    clause = node.onConflictClause
    if clause is not None:
        infer = clause.infer
        elems = (infer.indexElems or ()) if infer is not None else ()
        conflict = frozenset(e.name for e in elems if isinstance(e, ast.IndexElem) and e.name)
        if infer is not None and infer.conname:
            conflict = _named(infer.conname)
    return Write(rel, "insert", rows, conflict)


def _update_write(node: ast.UpdateStmt, rel: Relation) -> Write:
    row: dict[str, Value] = {}
    for t in node.targetList or ():
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
    return Write(rel, "update", [row])


def _nodes(query: Query) -> list[ast.Node]:
    """Every node of the query's tree, walked once and kept on the query."""
    if query.nodes is None:
        query.nodes = list(walk_nodes(query.tree))
    return query.nodes


def _may_write(query: Query) -> bool:
    """An INSERT or UPDATE, or a statement whose WITH may hold one: the only ones probed."""
    return _writes_in(query.tree)


def _writes_in(tree: Any) -> bool:
    if isinstance(tree, ast.InsertStmt | ast.UpdateStmt):
        return True
    with_clause = getattr(tree, "withClause", None)
    ctes = with_clause.ctes if with_clause is not None else None
    return any(_writes_in(c.ctequery) for c in ctes or () if isinstance(c, ast.CommonTableExpr))


def writes(
    query: Query, snapshot: Snapshot, only: Container[tuple[str, str]] | None = None
) -> list[Write]:
    """The INSERTs and UPDATEs of a query on tables of the phase (those in ``only``, when
    given), with their values."""
    if query.tree is None:
        return []
    nodes = _nodes(query)
    ctes = {n.ctename for n in nodes if isinstance(n, ast.CommonTableExpr) and n.ctename}
    out: list[Write] = []
    for node in nodes:
        if not isinstance(node, ast.InsertStmt | ast.UpdateStmt):
            continue
        rv = node.relation
        if rv is None or rv.relname is None or (rv.schemaname is None and rv.relname in ctes):
            continue
        rel = snapshot.resolve(rv.schemaname, rv.relname)
        if rel is None or rel.kind not in ("r", "p"):
            continue
        if only is not None and (rel.schema, rel.name) not in only:
            continue
        if isinstance(node, ast.InsertStmt):
            write = _insert_write(node, rel)
            if write is not None:
                out.append(write)
        else:
            out.append(_update_write(node, rel))
    return out


# -- the cell --------------------------------------------------------------------------------


@dataclass
class CellProbe:
    """One cell's view for the probes: its version, phase, and the phase it is compared
    with (the one before, whose constraints the version already met), if any."""

    version: Literal["old", "new"]
    version_label: str
    phase: str
    must_pass: bool
    snapshot: Snapshot
    before: Snapshot  # the schema before the release
    previous: Snapshot | None  # old@expanded: before; new@contracted: expanded
    findings: dict[int, list[Finding]] = field(default_factory=dict)

    def add(self, query: Query, check: str, severity: Severity, reason: str, fix: str) -> None:
        if check == "constraint-write" and severity == "warning" and self.version == "new":
            return  # see the module doc: the new version knows its constraints
        if not self.must_pass and severity == "error":
            severity = "info"
        found = self.findings.setdefault(id(query), [])
        if any(f.check == check and f.reason == reason for f in found):
            return
        found.append(
            Finding(
                check=check,
                severity=severity,
                reason=reason,
                fix=fix,
                file=query.file,
                line=query.line,
                query=query.name,
                version=self.version_label,
                phase=self.phase,
                must_pass=self.must_pass,
                sql=query.text,
            )
        )


def probe_cell(
    conn: psycopg.Connection[Any], cell: CellProbe, prepared: Iterable[Query]
) -> dict[int, list[Finding]]:
    """The findings of the probes of one cell, by ``id(query)``; ``prepared`` are the
    queries PREPARE took at this phase."""
    probes: list[Probe] = []
    handlers: list[Any] = []
    first: list[Query] = []  # the query of the first probe
    # The tables worth reading a write's values for: those the phase constrains anew, and
    # those a sync trigger converts writes on. Most writes touch neither.
    constrained: dict[tuple[str, str], tuple[list[Constraint], list[str]]] = {}
    if cell.previous is not None:
        for key, rel in cell.snapshot.relations.items():
            prev = cell.previous.relations.get(key)
            if rel.kind in ("r", "p") and prev is not None:
                added, tightened = _added(rel, prev)
                if added or tightened:
                    constrained[key] = (added, tightened)
    synced = (
        {k for k, rel in cell.snapshot.relations.items() if rel.sync_functions}
        if cell.phase == "expanded" and cell.must_pass
        else set()
    )
    watched = constrained.keys() | synced
    for query in prepared:
        if not _may_write(query):
            continue
        count = len(probes)
        _conflict_probe(cell, query, probes, handlers)
        for write in writes(query, cell.snapshot, watched) if watched else ():
            key = (write.relation.schema, write.relation.name)
            if key in constrained:
                _constraint_probes(cell, query, write, *constrained[key], probes, handlers)
            if key in synced:
                _sync_probes(cell, query, write, probes, handlers)
        if len(probes) > count and not first:
            first.append(query)
    try:
        outcomes = run_probes(conn, probes)
    except ProbesFailed as exc:
        # Said once, on the first query probed: what is left unchecked at this phase.
        cell.add(
            first[0],
            "probe",
            "warning",
            f"the server probes could not run at {cell.phase} ({exc}): ON CONFLICT targets, "
            "constraints the phase adds and sync conversions are not checked there",
            "give the scratch server's user the TEMP privilege on its databases (check "
            "creates a temporary function to run the probes)",
        )
        return cell.findings
    for handle, outcome in zip(handlers, outcomes, strict=True):
        handle(outcome)
    return cell.findings


# -- ON CONFLICT --------------------------------------------------------------------------------


def _conflict_probe(
    cell: CellProbe, query: Query, probes: list[Probe], handlers: list[Any]
) -> None:
    tree = query.tree
    if isinstance(tree, ast.InsertStmt | ast.UpdateStmt) and tree.withClause is None:
        if getattr(tree, "onConflictClause", None) is None:
            return  # the common write: no walk
    nodes = _nodes(query)
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


# -- constraints the phase adds -----------------------------------------------------------------


def _describe(con: Constraint) -> str:
    kind = {"c": "CHECK", "f": "FOREIGN KEY", "u": "UNIQUE", "p": "PRIMARY KEY"}[con.kind]
    return f"{kind} constraint {con.name} ({con.definition})"


def _added(rel: Relation, prev: Relation) -> tuple[list[Constraint], list[str]]:
    """The constraints of ``rel`` that ``prev`` lacks (compared by kind and definition, so
    a renamed or copied one is not new), and the columns NOT NULL only now."""
    had = {(c.kind, c.definition) for c in prev.checked}
    added = [c for c in rel.checked if (c.kind, c.definition) not in had]
    had_unique = {cols for _, cols in prev.unique_indexes}
    covered = {frozenset(c.columns) for c in added if c.kind in ("u", "p")}
    for name, cols in rel.unique_indexes:
        if (
            cols not in had_unique
            and cols not in covered
            and not any(frozenset(c.columns) == cols for c in prev.checked if c.kind in ("u", "p"))
        ):
            added.append(Constraint(name, "u", tuple(sorted(cols)), f"unique index {name}", None))
            covered.add(cols)
    tightened = [
        c.name
        for c in rel.columns
        if c.not_null and (old := prev.column(c.name)) is not None and not old.not_null
    ]
    return added, tightened


def _who(cell: CellProbe) -> tuple[str, str]:
    if cell.version == "old":
        return "the expand", (
            "add the constraint in the contract (after the old version is retired), or first "
            "release a version whose writes meet it"
        )
    return "the contract", (
        "change the new version's write to meet the constraint, or leave the constraint out "
        "of the contract"
    )


def _constraint_probes(
    cell: CellProbe,
    query: Query,
    write: Write,
    added: list[Constraint],
    tightened: list[str],
    probes: list[Probe],
    handlers: list[Any],
) -> None:
    rel = write.relation
    by, fix = _who(cell)
    verb = "INSERT into" if write.verb == "insert" else "UPDATE of"
    triggers = rel.before_insert_triggers if write.verb == "insert" else rel.before_update_triggers

    for column in tightened:
        for row in write.rows:
            value = row.get(column)
            if value is None:
                continue  # left out: insert-not-null judges the default
            what = f"NOT NULL on {rel.name}.{column}, which {by} adds"
            if value.kind == "null":
                cell.add(
                    query,
                    "constraint-write",
                    "error",
                    f"{verb} {rel.qualified} writes NULL to {column}: {what} rejects it",
                    fix,
                )
            elif value.kind == "param":
                cell.add(
                    query,
                    "constraint-write",
                    "warning",
                    f"{verb} {rel.qualified} writes {column} from a parameter: {what} rejects "
                    "a NULL",
                    fix,
                )

    for con in added:
        for row in write.rows:
            values: dict[str, Value] = {}
            for column in con.columns:
                if column in row:
                    values[column] = row[column]
                elif write.verb == "update" or triggers:
                    values[column] = Value("unknown")  # the row's, or a trigger's
                else:
                    col = rel.column(column)
                    if col is None or col.generated or col.identity:
                        values[column] = Value("unknown")  # computed from the row
                    elif col.default is not None:
                        values[column] = Value("literal", col.default)
                    else:
                        values[column] = Value("null")
            if not any(c in row for c in con.columns):
                if con.kind != "c" or write.verb == "update" or triggers:
                    continue  # not written; the existing or default value is not new
            _judge(cell, query, write, con, values, by, fix, verb, probes, handlers)
        if con.kind in ("u", "p") and write.verb == "insert" and len(write.rows) > 1:
            keys = [tuple(row.get(c, Value("unknown")) for c in con.columns) for row in write.rows]
            literal = [k for k in keys if all(v.kind == "literal" for v in k)]
            if len(set(literal)) < len(literal):
                cell.add(
                    query,
                    "constraint-write",
                    "error",
                    f"{verb} {rel.qualified} writes the same {', '.join(con.columns)} twice: "
                    f"{_describe(con)}, which {by} adds, rejects the second row",
                    fix,
                )


def _shown(values: dict[str, Value], columns: Iterable[str]) -> str:
    """``a from a parameter, b = 'x'``: the written values of ``columns``."""
    parts = []
    for c in columns:
        v = values[c]
        if v.kind == "param":
            parts.append(f"{c} from a parameter")
        elif v.kind == "literal":
            parts.append(f"{c} = {v.sql}")
    return ", ".join(parts)


def _judge(
    cell: CellProbe,
    query: Query,
    write: Write,
    con: Constraint,
    values: dict[str, Value],
    by: str,
    fix: str,
    verb: str,
    probes: list[Probe],
    handlers: list[Any],
) -> None:
    rel = write.relation
    what = f"{_describe(con)}, which {by} adds"
    params = [c for c, v in values.items() if v.kind == "param"]
    if con.kind == "f":
        # MATCH SIMPLE: a NULL in any column passes; otherwise the data decides.
        if any(v.kind == "null" for v in values.values()):
            return
        written = _shown(values, con.columns)
        if written:
            cell.add(
                query,
                "constraint-write",
                "warning",
                f"{verb} {rel.qualified} writes {written}: {what}, rejects a value the "
                "referenced table lacks",
                fix,
            )
        return
    if con.kind in ("u", "p"):
        if write.verb == "insert" and write.conflict is not None:
            if write.conflict in (frozenset(), frozenset(con.columns), _named(con.name)):
                return  # the upsert takes the conflict
        if all(v.kind == "null" for v in values.values()):
            return
        written = _shown(values, con.columns)
        if written:
            cell.add(
                query,
                "constraint-write",
                "warning",
                f"{verb} {rel.qualified} writes {written}: {what}, rejects a value another row has",
                fix,
            )
        return
    # CHECK: the server evaluates it on the written values; a parameter decides otherwise.
    if params:
        cell.add(
            query,
            "constraint-write",
            "warning",
            f"{verb} {rel.qualified} writes {', '.join(params)} from a parameter: {what}, "
            "rejects some values",
            fix,
        )
        return
    if con.expression is None or any(v.kind in ("unknown", "default") for v in values.values()):
        return
    columns = []
    for name, value in values.items():
        col = rel.column(name)
        if col is None:
            return
        sql = "NULL" if value.kind == "null" else f"({value.sql})"
        columns.append(f"CAST({sql} AS {col.type}) AS {ident(name)}")
    shown = ", ".join(f"{n} = {'NULL' if v.kind == 'null' else v.sql}" for n, v in values.items())
    probes.append(
        Probe(
            [],
            f"SELECT ({con.expression}) IS NOT FALSE FROM (SELECT {', '.join(columns)}) AS row",
        )
    )

    def handle(outcome: Outcome) -> None:
        if outcome.state is None and outcome.value == "false":
            cell.add(
                query,
                "constraint-write",
                "error",
                f"{verb} {rel.qualified} writes {shown}: {what}, rejects it",
                fix,
            )

    handlers.append(handle)


# -- the sync triggers' conversions ---------------------------------------------------------------


def _sync_probes(
    cell: CellProbe, query: Query, write: Write, probes: list[Probe], handlers: list[Any]
) -> None:
    rel = write.relation
    if not rel.sync_functions:
        return
    for row in write.rows:
        literals = {c: v for c, v in row.items() if v.kind == "literal"}
        if not literals:
            continue
        # The same conversion serves an UPDATE: the trigger computes the other column
        # from what was written, so an INSERT of the written values alone runs it.
        columns = ", ".join(ident(c) for c in literals)
        values = ", ".join(v.sql for v in literals.values())
        probes.append(
            Probe([f"INSERT INTO {ident(rel.schema, rel.name)} ({columns}) VALUES ({values})"])
        )
        shown = ", ".join(f"{c} = {v.sql}" for c, v in literals.items())

        def handle(outcome: Outcome, shown: str = shown) -> None:
            context = outcome.context or ""
            function = next((f for f in rel.sync_functions if f"function {f}(" in context), None)
            if outcome.state is None or function is None:
                return
            cell.add(
                query,
                "sync-convert",
                "error",
                f"the {cell.version} version writes {rel.name}.{shown}, which the sync "
                f"trigger {function} cannot convert for the other version's column: "
                f"{outcome.message} [{outcome.state}]",
                "write a value the new type takes, or give the plan an up: (down:) expression "
                "that converts every value this version writes",
            )

        handlers.append(handle)


__all__ = [
    "CellProbe",
    "Outcome",
    "Probe",
    "ProbesFailed",
    "Write",
    "probe_cell",
    "run_probes",
    "writes",
]
