"""``constraint-write``: a CHECK, FOREIGN KEY, UNIQUE or NOT NULL a phase adds, held against
the writes of the version that runs there (see the package's doc for who is held to what)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from migrator.sqltext import ident, literal
from migrator.verify.probes.cell import CellProbe
from migrator.verify.probes.server import Outcome, Probe
from migrator.verify.probes.writes import EXPRESSION, Value, Write, named
from migrator.verify.queries import Query
from migrator.verify.snapshot import Constraint, Relation


def _describe(con: Constraint) -> str:
    if con.elements and con.kind == "u":
        return con.definition.replace("unique index on", f"unique index {con.name} on", 1)
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
    had_keys = {c.key for c in prev.unique_keys}
    added += [c for c in rel.unique_keys if c.key not in had_keys and c.columns]
    tightened = [
        c.name
        for c in rel.columns
        if c.not_null and (old := prev.column(c.name)) is not None and not old.not_null
    ]
    return added, tightened


def who(cell: CellProbe) -> tuple[str, str]:
    if cell.version == "old":
        return "the expand", (
            "add the constraint in the contract (after the old version is retired), or first "
            "release a version whose writes meet it"
        )
    if cell.phase == "expanded":
        return "the expand", "change the new version's write to meet the constraint"
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
    by, fix = who(cell)
    verb = write.verb_phrase
    triggers = rel.before_insert_triggers if write.verb == "insert" else rel.before_update_triggers

    for column in tightened:
        what = f"NOT NULL on {rel.name}.{column}, which {by} adds"
        col = rel.column(column)
        # Nothing gives the column a value the row lacks: no default, identity, generation
        # or BEFORE trigger.
        defaultless = (
            not triggers
            and col is not None
            and not (col.has_default or col.identity or col.generated)
        )
        for row in write.rows:
            value = row.get(column)
            if value is not None and value.kind == "default" and defaultless:
                # DEFAULT where there is none is NULL; insert-not-null takes it as written.
                cell.add(
                    query,
                    "constraint-write",
                    "error",
                    f"{verb} {write.target} writes DEFAULT to {column}, which has no default: "
                    f"{what}, rejects the NULL",
                    fix,
                )
                continue
            if value is None:
                # Left out: insert-not-null judges the table's default, but not through a
                # view (a view's INSERT takes the table's default where it has none).
                if write.via is not None and write.verb == "insert" and defaultless:
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
        known: list[tuple[int, dict[str, Value]]] = []  # rows whose key values are literals
        for number, row in enumerate(write.rows, 1):
            values = _row_values(write, row, con.columns + con.predicate_columns, triggers)
            if all(v.kind in ("literal", "null") for v in values.values()):
                known.append((number, values))
            # DEFAULT written is the column's default: a CHECK judges it; a key with its
            # default is judged as one left out (not written: the default is not new).
            if not any(c in row and row[c].kind != "default" for c in con.columns):
                touched = any(c in row for c in con.columns)
                if con.kind != "c" or not (touched or (write.verb == "insert" and not triggers)):
                    continue
            _judge(cell, query, write, con, values, by, fix, verb, probes, handlers)
        if (
            con.kind in ("u", "p", "x")
            and con.columns
            and write.verb == "insert"
            and len(known) > 1
            and not write.distinct  # a UNION may fold the two rows into one
            and not write.selects  # an arm that reads the data may select no row
            and not _takes_conflict(write, con)
        ):
            _rows_conflict(cell, query, write, con, known, by, fix, verb, probes, handlers)
        if (
            con.kind in ("u", "p", "x")
            and con.columns
            and write.source is not None
            and not _takes_conflict(write, con)
            and set(con.columns + con.predicate_columns) <= set(write.names)
            and not triggers  # a BEFORE trigger may change the rows
        ):
            _select_conflict(cell, query, write, con, by, fix, verb, probes, handlers)


def _row_values(
    write: Write, row: dict[str, Value], columns: Iterable[str], triggers: list[str]
) -> dict[str, Value]:
    """What one row gives each of ``columns``: the written value; for DEFAULT, or an
    INSERT that leaves a column out, its default (NULL without one); unknown where the
    row's old value or a trigger decides, or the column is computed."""
    rel = write.relation
    values: dict[str, Value] = {}
    for column in columns:
        value = row.get(column)
        if value is not None and value.kind != "default":
            values[column] = value
        elif triggers or (value is None and write.verb == "update"):
            values[column] = Value("unknown")  # the row's, or a trigger's
        else:
            col = rel.column(column)
            if col is None or col.generated or col.identity:
                values[column] = Value("unknown")  # computed from the row
            elif col.default is not None:
                values[column] = Value("literal", col.default)
            else:
                values[column] = Value("null")
    return values


def _takes_conflict(write: Write, con: Constraint) -> bool:
    """The INSERT's ON CONFLICT takes a conflict on ``con`` (DO NOTHING without a target
    takes any; a target takes its unique constraint's, never an exclusion's)."""
    if write.verb != "insert" or write.conflict is None:
        return False
    if write.conflict == frozenset():
        return True
    if con.kind not in ("u", "p"):
        return False  # a target names a unique index: an exclusion's conflict is raised
    if write.conflict in (frozenset(con.columns), named(con.name)):
        return True
    # A target over expressions: the server infers which unique index over expressions it
    # names; any of them may be it (not told apart here), a plain key is not.
    return EXPRESSION in write.conflict and bool(con.elements)


def _typed(rel: Relation, values: dict[str, Value]) -> list[str] | None:
    """Each value cast to its column's type, as the INSERT coerces it; None when a column
    is not the table's."""
    typed = []
    for name, value in values.items():
        col = rel.column(name)
        if col is None:
            return None
        sql = "NULL" if value.kind == "null" else f"({value.sql})"
        typed.append(f"CAST({sql} AS {col.type})")
    return typed


def _keys(con: Constraint) -> list[tuple[str, str]]:
    """The constraint's key as (expression, operator) pairs: an EXCLUDE's elements; a
    UNIQUE's columns compared by ``=`` (NULLs equal under NULLS NOT DISTINCT)."""
    if con.elements:
        return list(zip(con.elements, con.operators, strict=True))
    op = "IS NOT DISTINCT FROM" if "NULLS NOT DISTINCT" in con.definition else "="
    return [(ident(c), op) for c in con.columns]


def _first_conflict(con: Constraint) -> tuple[str, str]:
    """The CTE computing each row's key once (``migrator_keys``, from ``migrator_rows``,
    as the INSERT computes it; the predicate applied) and the query naming the first
    pair of rows whose keys conflict under the constraint's operators."""
    keys = _keys(con)
    row = ident("migrator row")
    picked = ", ".join(f"({expr}) AS k{i}" for i, (expr, _) in enumerate(keys))
    pairs = " AND ".join(f"a.k{i} {op} b.k{i}" for i, (_, op) in enumerate(keys))
    cte = f"migrator_keys AS MATERIALIZED (SELECT {row}, {picked} FROM migrator_rows" + (
        f" WHERE ({con.predicate})" if con.predicate else ""
    )
    return (
        cte + ")",
        f"SELECT a.{row} || ' and ' || b.{row} FROM migrator_keys a "
        f"JOIN migrator_keys b ON a.{row} < b.{row} AND {pairs} "
        f"ORDER BY b.{row}, a.{row} LIMIT 1",
    )


def _conflict_found(
    cell: CellProbe,
    query: Query,
    write: Write,
    con: Constraint,
    by: str,
    fix: str,
    verb: str,
    of: str = "",
) -> Callable[[Outcome], None]:
    """The handler of a `_first_conflict` probe: the pair it names is an error (``of``:
    where the rows come from, after their numbers)."""

    def handle(outcome: Outcome) -> None:
        if outcome.state is None and outcome.value is not None:
            what = (
                f"writes the same {', '.join(con.columns)} in rows {outcome.value}{of}"
                if con.kind in ("u", "p") and not con.elements
                else f"writes rows {outcome.value}{of}, which conflict with each other"
            )
            cell.add(
                query,
                "constraint-write",
                "error",
                f"{verb} {write.target} {what}: {_describe(con)}, which {by} adds, rejects "
                "the later one",
                fix,
            )

    return handle


def _rows_conflict(
    cell: CellProbe,
    query: Query,
    write: Write,
    con: Constraint,
    known: list[tuple[int, dict[str, Value]]],
    by: str,
    fix: str,
    verb: str,
    probes: list[Probe],
    handlers: list[Any],
) -> None:
    """Two literal rows of one INSERT that conflict with each other under a UNIQUE or an
    EXCLUDE: the later is rejected whatever the table holds, so an error. The server
    compares every pair in one query: the rows as a VALUES list cast to the columns'
    types, the key (an EXCLUDE's expressions, its predicate) computed once per row, then
    joined to itself with the constraint's operators."""
    rel = write.relation
    names = list(known[0][1])
    rows = []
    for number, values in known:
        typed = _typed(rel, values)
        if typed is None:
            return
        rows.append(f"({number}, {', '.join(typed)})")
    columns = ", ".join(ident(n) for n in ["migrator row", *names])
    keys_cte, first_pair = _first_conflict(con)
    probes.append(
        Probe(
            [],
            f"WITH migrator_rows ({columns}) AS (VALUES {', '.join(rows)}), "
            f"{keys_cte} {first_pair}",
        )
    )
    handlers.append(_conflict_found(cell, query, write, con, by, fix, verb))


# At most this many rows of a data-free SELECT are compared (each pair, for an EXCLUDE).
SELECT_ROWS = 1000


def _select_conflict(
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
    """Two rows of an INSERT ... SELECT that conflict with each other under a UNIQUE or
    an EXCLUDE, where the SELECT reads no table (constants, VALUES, generate_series): the
    server runs the SELECT itself (its UNION, DISTINCT, LIMIT as written), casts the
    columns to the table's types, and compares the keys as `_rows_conflict` does. Said
    only where that is certain: every function it calls immutable, or stable and built
    in (a function of the project's could read a table, which here holds no rows); at
    most `SELECT_ROWS` rows."""
    rel = write.relation
    needed = list(dict.fromkeys(con.columns + con.predicate_columns))
    casts = []
    for name in needed:
        col = rel.column(name)
        if col is None:
            return
        casts.append(f"CAST({ident(name)} AS {col.type}) AS {ident(name)}")
    row = ident("migrator row")
    listed = ", ".join(
        [row, *(ident(n) if n else ident(f"migrator col {i}") for i, n in enumerate(write.names))]
    )
    keys_cte, first_pair = _first_conflict(con)
    names = ", ".join(literal(f) for f in write.functions)
    unsafe = (
        f"EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE proname IN ({names}) AND NOT "
        "(provolatile = 'i' OR (provolatile = 's' AND prolang = 12)))"
        if write.functions
        else "false"
    )
    probes.append(
        Probe(
            [],
            f"WITH migrator_source ({listed}) AS MATERIALIZED (SELECT row_number() OVER (), "
            f"migrator_select.* FROM ({write.source}) AS migrator_select "
            f"LIMIT {SELECT_ROWS + 1}), "
            f"migrator_rows AS (SELECT {row}, {', '.join(casts)} FROM migrator_source), "
            f"{keys_cte} SELECT CASE WHEN {unsafe} THEN NULL "
            f"WHEN (SELECT count(*) FROM migrator_source) > {SELECT_ROWS} THEN NULL "
            f"ELSE ({first_pair}) END",
        )
    )
    handlers.append(_conflict_found(cell, query, write, con, by, fix, verb, of=" of its SELECT"))


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
                once=con.name,
            )
        return
    if con.kind == "x" or con.elements:  # an EXCLUDE, a unique index over expressions
        _judge_exclusion(cell, query, write, con, values, what, fix, verb, probes, handlers)
        return
    if con.kind in ("u", "p"):
        if _takes_conflict(write, con):
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
                once=con.name,
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
            once=con.name,
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
                once=con.name + " rejects",
            )

    handlers.append(handle)


def _judge_exclusion(
    cell: CellProbe,
    query: Query,
    write: Write,
    con: Constraint,
    values: dict[str, Value],
    what: str,
    fix: str,
    verb: str,
    probes: list[Probe],
    handlers: list[Any],
) -> None:
    """One row against an EXCLUDE: it conflicts only where another row does (the data
    decides, a warning), and never where an element is NULL (the operators are strict)
    or the predicate leaves it out. A column element's NULL is read here; an expression
    element or the predicate over literals is evaluated by the server. An element or a
    predicate the server cannot evaluate on the literals (a cast that fails) is an error:
    the write computes them for its index entry whatever the table holds, so it fails."""

    def known(cols: Iterable[str]) -> bool:
        return all(values[c].kind in ("literal", "null") for c in cols)

    # A NULL column element never conflicts (nor does an upsert's taken conflict): no
    # warning; but the index entry is still computed, so its errors stand.
    quiet = _takes_conflict(write, con) or any(
        plain and values[cols[0]].kind == "null"
        for cols, plain in zip(con.element_columns, con.plain, strict=True)
    )
    tests = [
        f"({expr}) IS NOT NULL"
        for expr, cols, plain in zip(con.elements, con.element_columns, con.plain, strict=True)
        if not plain and known(cols)
    ]
    predicate = con.predicate is not None and known(con.predicate_columns)
    written = _shown(values, con.columns)
    if not written:
        return
    reason = (
        f"{verb} {write.target} writes {written}: {what}, rejects the row where another row "
        "conflicts with it (the data decides)"
    )
    if not tests and not predicate:
        if not quiet:
            cell.add(query, "constraint-write", "warning", reason, fix, once=con.name)
        return
    # Only the literals are judged: a parameter's or the data's value is no column here.
    literals = {n: v for n, v in values.items() if v.kind in ("literal", "null")}
    typed = _typed(write.relation, literals)
    if typed is None:
        return
    row = ", ".join(f"{t} AS {ident(n)}" for n, t in zip(literals, typed, strict=True))
    # The row apart (OFFSET 0: not folded into the test), so that a literal the column
    # cannot take (PREPARE's or the data's to tell) is not taken for the element's error.
    source = f"(SELECT {row} OFFSET 0) AS migrator_row"
    cast: list[Outcome] = []
    probes.append(Probe([], f"SELECT 1 FROM {source}"))
    handlers.append(cast.append)
    test = " AND ".join(tests) or "true"
    if predicate:
        # The index computes its elements only for a row the predicate takes: in order.
        test = f"CASE WHEN ({con.predicate}) IS TRUE THEN {test} ELSE false END"
    probes.append(Probe([], f"SELECT {test} FROM {source}"))
    # Certain only where nothing else decides whether the elements are computed.
    certain = con.predicate is None or predicate

    def handle(outcome: Outcome) -> None:
        if outcome.state is not None:
            if certain and cast and cast[0].state is None and outcome.message:
                shown = ", ".join(
                    f"{n} = {'NULL' if v.kind == 'null' else v.sql}" for n, v in literals.items()
                )
                cell.add(
                    query,
                    "constraint-write",
                    "error",
                    f"{verb} {write.target} writes {shown}: {what}, cannot compute its key "
                    f"for the row: {outcome.message}",
                    fix,
                    once=con.name + " fails",
                )
            return
        if outcome.value == "true" and not quiet:
            cell.add(query, "constraint-write", "warning", reason, fix, once=con.name)

    handlers.append(handle)


__all__ = ["added_constraints", "constraint_probes", "who"]
