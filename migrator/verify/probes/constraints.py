"""``constraint-write``: a CHECK, FOREIGN KEY, UNIQUE or NOT NULL a phase adds, held against
the writes of the version that runs there (see the package's doc for who is held to what)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from migrator.sqltext import ident
from migrator.verify.probes.cell import CellProbe
from migrator.verify.probes.server import Outcome, Probe
from migrator.verify.probes.writes import Value, Write, named
from migrator.verify.queries import Query
from migrator.verify.snapshot import Constraint, Relation


def _describe(con: Constraint) -> str:
    kind = {"c": "CHECK", "f": "FOREIGN KEY", "u": "UNIQUE", "p": "PRIMARY KEY", "x": "EXCLUDE"}[
        con.kind
    ]
    return f"{kind} constraint {con.name} ({con.definition})"


def added_constraints(rel: Relation, prev: Relation) -> tuple[list[Constraint], list[str]]:
    """The constraints of ``rel`` that ``prev`` lacks (compared by kind and definition, so
    a renamed or copied one is not new), and the columns NOT NULL only now."""
    had = {c.key for c in prev.checked}
    added = [c for c in rel.checked if c.key not in had]
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


def constraint_probes(
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
            what = f"NOT NULL on {rel.name}.{column}, which {by} adds"
            if value is None:
                # Left out: insert-not-null judges the table's default, but not through a
                # view (a view's INSERT takes the table's default where it has none).
                col = rel.column(column)
                if (
                    write.via is not None
                    and write.verb == "insert"
                    and not triggers
                    and col is not None
                    and not (col.has_default or col.identity or col.generated)
                ):
                    cell.add(
                        query,
                        "constraint-write",
                        "error",
                        f"{verb} {write.target} leaves out {column}, which has no default: "
                        f"{what}, rejects the NULL",
                        fix,
                    )
                continue
            if value.kind == "null":
                cell.add(
                    query,
                    "constraint-write",
                    "error",
                    f"{verb} {write.target} writes NULL to {column}: {what}, rejects it",
                    fix,
                )
            elif value.kind == "param":
                cell.add(
                    query,
                    "constraint-write",
                    "warning",
                    f"{verb} {write.target} writes {column} from a parameter: {what}, rejects "
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
        if (
            con.kind in ("u", "p")
            and write.verb == "insert"
            and len(write.rows) > 1
            and not write.distinct  # a UNION may fold the two rows into one
        ):
            keys = [tuple(row.get(c, Value("unknown")) for c in con.columns) for row in write.rows]
            literal = [k for k in keys if all(v.kind == "literal" for v in k)]
            if len(set(literal)) < len(literal):
                cell.add(
                    query,
                    "constraint-write",
                    "error",
                    f"{verb} {write.target} writes the same {', '.join(con.columns)} twice: "
                    f"{_describe(con)}, which {by} adds, rejects the second row",
                    fix,
                )
        if con.kind == "x" and write.verb == "insert" and len(write.rows) > 1:
            _rows_conflict(cell, query, write, con, by, fix, verb, probes, handlers)


def _rows_conflict(
    cell: CellProbe,
    query: Query,
    write: Write,
    con: Constraint,
    by: str,
    fix: str,
    verb: str,
    probes: list[Probe],
    handlers: list[Any],
) -> None:
    """Two literal rows of one INSERT that conflict with each other under an EXCLUDE: the
    second is rejected whatever the table holds, so an error; the server applies the
    constraint's operators to each pair."""
    rel = write.relation
    types = [rel.column(c) for c in con.columns]
    if not con.operators or " WHERE " in con.definition or write.distinct or None in types:
        return  # an expression element, or a predicate that may leave a row out
    rows = [
        r for r in write.rows if all(r.get(c, Value("null")).kind == "literal" for c in con.columns)
    ]
    pairs = []
    for i, first in enumerate(rows[:16]):
        for second in rows[i + 1 : 16]:
            pairs.append(
                " AND ".join(
                    f"(CAST(({first[c].sql}) AS {col.type}) {op} CAST(({second[c].sql}) AS {col.type}))"
                    for c, op, col in zip(con.columns, con.operators, types, strict=True)
                    if col is not None
                )
            )
    if not pairs:
        return
    probes.append(Probe([], "SELECT " + " OR ".join(f"({p})" for p in pairs)))

    def handle(outcome: Outcome) -> None:
        if outcome.state is None and outcome.value == "true":
            cell.add(
                query,
                "constraint-write",
                "error",
                f"{verb} {write.target} writes two rows that conflict with each other: "
                f"{_describe(con)}, which {by} adds, rejects the second",
                fix,
            )

    handlers.append(handle)


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
                f"{verb} {write.target} writes {written}: {what}, rejects a value the "
                "referenced table lacks",
                fix,
            )
        return
    if con.kind == "x":
        # NULL in an element never conflicts (the operators are strict); an element that
        # is an expression may hide one, so only a constraint of plain columns is judged.
        if not con.operators or any(v.kind == "null" for v in values.values()):
            return
        if write.verb == "insert" and write.conflict == frozenset():
            return  # ON CONFLICT DO NOTHING with no target takes an exclusion conflict
        written = _shown(values, con.columns)
        if written:
            cell.add(
                query,
                "constraint-write",
                "warning",
                f"{verb} {write.target} writes {written}: {what}, rejects the row where "
                "another row conflicts with it (the data decides)",
                fix,
            )
        return
    if con.kind in ("u", "p"):
        if write.verb == "insert" and write.conflict is not None:
            if write.conflict in (frozenset(), frozenset(con.columns), named(con.name)):
                return  # the upsert takes the conflict
        if all(v.kind == "null" for v in values.values()):
            return
        written = _shown(values, con.columns)
        if written:
            cell.add(
                query,
                "constraint-write",
                "warning",
                f"{verb} {write.target} writes {written}"
                + (" on every row it selects" if write.selects else "")
                + f": {what}, rejects a value another row has",
                fix,
            )
        return
    # CHECK: the server evaluates it on the written values; a parameter decides otherwise.
    if params:
        cell.add(
            query,
            "constraint-write",
            "warning",
            f"{verb} {write.target} writes {', '.join(params)} from a parameter: {what}, "
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
                f"{verb} {write.target} writes {shown}: {what}, rejects it",
                fix,
            )

    handlers.append(handle)


__all__ = ["added_constraints", "constraint_probes"]
