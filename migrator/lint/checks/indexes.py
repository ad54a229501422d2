"""CREATE INDEX and DROP INDEX: rules M001, M002, M003, M004, M010 and M030 for them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pglast import ast, enums
from pglast.stream import RawStream

from migrator.lint.model import LintPhase, Stmt, Unit, UnitState, names, quote, rel
from migrator.lint.registry import on

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer

OT = enums.ObjectType


@on(ast.IndexStmt)
def create_index(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rules 1, 3, 4, 10 and 30 for CREATE INDEX."""
    node = stmt.node
    assert isinstance(node, ast.IndexStmt)
    table = rel(node.relation)
    schema = (node.relation.schemaname if node.relation else None) or a.schema
    name = node.idxname or f"(unnamed index on {table})"
    dropped_first = node.idxname is not None and a.dropped_before(stmt, node.idxname)
    if node.idxname:
        a.tracker.indexes[node.idxname] = table
    if node.concurrent and unit.transactional:
        # Refused inside a transaction block even on a table created just before.
        a.report(
            "M003",
            stmt,
            f"CREATE INDEX CONCURRENTLY {name} inside a transaction: PostgreSQL refuses it",
        )
        return
    if a.new(table):
        return
    if not node.concurrent and only_partitioned(a, schema, table, node.relation):
        # ON ONLY a partitioned table builds nothing: an empty index, catalog only,
        # that its partitions' indexes (built CONCURRENTLY) are attached to.
        return
    if not node.concurrent:
        a.report(
            "M001",
            stmt,
            f"CREATE INDEX {name} without CONCURRENTLY blocks every write to {table} "
            "for the whole build",
        )
    else:
        if not node.if_not_exists and not dropped_first:
            a.not_rerunnable(
                stmt,
                f"CREATE INDEX CONCURRENTLY {name} fails on a rerun (the name exists, "
                "perhaps as the INVALID leftover of the failed attempt)",
            )
        invalid_index(a, stmt, schema, node, dropped_first)
    if node.unique:
        unique_index_over_duplicates(a, stmt, schema, table, node)


def only_partitioned(a: Analyzer, schema: str, table: str, relation: ast.RangeVar | None) -> bool:
    """CREATE INDEX ON ONLY a table the live database knows as partitioned."""
    if relation is None or relation.inh or a.live is None:
        return False
    return a.live.partitioned(schema, table) is True


def invalid_index(
    a: Analyzer, stmt: Stmt, schema: str, node: ast.IndexStmt, dropped_first: bool
) -> None:
    """Rule 4: an INVALID index where the plan builds one (or the risk of keeping one)."""
    if dropped_first or not node.idxname:
        return
    if a.live is not None:
        if a.live.index_valid(schema, node.idxname) is False:
            a.report(
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
        a.report(
            "M004",
            stmt,
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {node.idxname} silently keeps an "
            "INVALID index a failed attempt left behind; drop it first",
            "warning",
        )


def unique_index_over_duplicates(
    a: Analyzer, stmt: Stmt, schema: str, table: str, node: ast.IndexStmt
) -> None:
    """Rule 10 for a unique index (with a database)."""
    if a.live is None:
        return
    keys: list[str] = []
    for param in node.indexParams or ():
        if not isinstance(param, ast.IndexElem):
            return
        if param.name:
            keys.append(quote(param.name))
        elif param.expr is not None:
            keys.append(RawStream()(param.expr))
    where = RawStream()(node.whereClause) if node.whereClause else None
    report_duplicates(a, stmt, schema, table, keys, where)


def report_duplicates(
    a: Analyzer, stmt: Stmt, schema: str, table: str, keys: list[str], where: str | None
) -> None:
    """Rule 10: the key values already held by more than one row (with a database)."""
    assert a.live is not None
    found = a.live.duplicates(schema, table, keys, where)
    if not found or found[0] == 0:
        return
    count, samples = found
    shown = "; ".join(f"({value}) x{n}" for value, n in samples)
    a.report(
        "M010",
        stmt,
        f"{count} key value(s) of ({', '.join(keys)}) appear more than once in "
        f"{schema}.{table}, so the unique build fails: {shown}",
    )


@on(ast.DropStmt)
def drop_index(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rules 2, 3 and 30 for DROP INDEX."""
    node = stmt.node
    assert isinstance(node, ast.DropStmt)
    if node.removeType != OT.OBJECT_INDEX:
        return
    for parts in (names(o) for o in node.objects or () if isinstance(o, tuple | list)):
        index = parts[-1]
        table = a.index_table(index, parts[:-1])
        if node.concurrent and unit.transactional:
            a.report(
                "M003",
                stmt,
                f"DROP INDEX CONCURRENTLY {index} inside a transaction: PostgreSQL refuses it",
            )
            continue
        if table is not None and a.new(table):
            continue
        if not node.concurrent and table is not None and a.live is not None:
            schema = parts[-2] if len(parts) > 1 else a.schema
            if a.live.partitioned(schema, table):
                a.report(
                    "M002",
                    stmt,
                    f"DROP INDEX {index} takes ACCESS EXCLUSIVE on {table} and every "
                    "partition: a partitioned index has no CONCURRENTLY form (the lock is "
                    "for the catalog change only, no scan)",
                    "warning",
                )
                continue
        if not node.concurrent:
            a.report(
                "M002",
                stmt,
                f"DROP INDEX {index} without CONCURRENTLY takes ACCESS EXCLUSIVE on "
                f"{table or 'its table'}",
            )
        elif not node.missing_ok:
            a.not_rerunnable(stmt, f"DROP INDEX CONCURRENTLY {index} without IF EXISTS")
