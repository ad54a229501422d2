"""Names: rules M033 (identifiers longer than 63 bytes) and M041 (tables named without
their schema, optional)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pglast
from pglast import ast

from migrator.lint.model import LintPhase, Stmt, Unit, UnitState, walk
from migrator.lint.registry import on

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer

# NAMEDATALEN - 1: the scanner truncates longer identifiers (with only a NOTICE).
MAX_IDENTIFIER_BYTES = 63


# An unquoted identifier as PostgreSQL's scanner reads it (scan.l: ident_start,
# ident_cont), over the UTF-8 bytes, 64 bytes or longer. Text with no such run and no
# double quote cannot hold a long identifier, and is not scanned.
_LONG_UNQUOTED = re.compile(rb"[A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9$]{63}")


def long_identifiers(sql: str) -> list[str]:
    """The identifiers of SQL text longer than 63 bytes, as written.

    Read from PostgreSQL's own scanner: the parse tree already holds them truncated.
    """
    found: list[str] = []
    if '"' not in sql and not _LONG_UNQUOTED.search(sql.encode("utf-8")):
        return found
    for token in pglast.parser.scan(sql):
        if token.name != "IDENT":
            continue
        text = sql[token.start : token.end + 1]
        if text.startswith('"') and text.endswith('"'):
            name = text[1:-1].replace('""', '"')
        else:
            name = text.lower()
        if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES and name not in found:
            found.append(name)
    return found


@on(ast.Node)
def identifier_too_long(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 33: an identifier PostgreSQL truncates."""
    for name in long_identifiers(stmt.sql):
        size = len(name.encode("utf-8"))
        a.report(
            "M033",
            stmt,
            f"identifier {name[:20]}... is {size} bytes: PostgreSQL keeps only the first "
            f"{MAX_IDENTIFIER_BYTES} ({name.encode('utf-8')[:MAX_IDENTIFIER_BYTES].decode('utf-8', 'ignore')})",
        )


@on(ast.Node)
def unqualified_table_name(
    a: Analyzer, stmt: Stmt, unit: Unit, state: UnitState, phase: LintPhase | None
) -> None:
    """Rule 41 (optional): tables named without a schema depend on the search_path."""
    if "M041" not in a.enabled:
        return
    nodes = list(walk(stmt.node))
    # The names a WITH defines are no tables.
    ctes = {n.ctename for n in nodes if isinstance(n, ast.CommonTableExpr) and n.ctename}
    bare: list[str] = []
    for relation in (n for n in nodes if isinstance(n, ast.RangeVar)):
        name = relation.relname or ""
        # A temporary table lives in the session's own schema: it has no other name.
        temporary = relation.relpersistence == "t" or name in a.tracker.temp_tables
        if relation.schemaname or name in ctes or temporary:
            continue
        if name and name not in bare:
            bare.append(name)
    if bare:
        a.report(
            "M041",
            stmt,
            f"names {', '.join(bare)} without a schema: which table that is depends on the "
            "session's search_path",
        )
