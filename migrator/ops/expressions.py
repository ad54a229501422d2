"""What operations need to know about SQL expressions written in a plan, asked of pglast.

pglast is PostgreSQL's own parser; migrator never parses SQL by hand.
"""

from __future__ import annotations

from typing import Any

import pglast
from pglast import ast
from pglast.visitors import Visitor


class _ColumnRefs(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def visit_ColumnRef(self, ancestors: Any, node: ast.ColumnRef) -> None:
        fields = [f.sval for f in node.fields or () if isinstance(f, ast.String) and f.sval]
        if fields and fields[-1] not in self.names:
            self.names.append(fields[-1])


def parse_expression(expression: str) -> ast.Node:
    """The parse tree of one SQL expression; raises ValueError with the parser's message."""
    try:
        stmts = pglast.parse_sql(f"SELECT ({expression})")
    except pglast.parser.ParseError as exc:
        raise ValueError(f"not a valid SQL expression: {exc}") from None
    if len(stmts) != 1:
        raise ValueError("expected one SQL expression")
    select = stmts[0].stmt
    assert isinstance(select, ast.SelectStmt) and select.targetList
    target = select.targetList[0]
    assert isinstance(target, ast.ResTarget) and target.val is not None
    return target.val


def column_refs(expression: str) -> list[str]:
    """The column names an expression reads (each once)."""
    visitor = _ColumnRefs()
    visitor(parse_expression(expression))
    return visitor.names


def is_constant(expression: str | int | float | bool) -> bool:
    """True for a literal (possibly cast), which ADD COLUMN ... DEFAULT stores without a rewrite."""
    if not isinstance(expression, str):
        return True
    node: ast.Node | None = parse_expression(expression)
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return isinstance(node, ast.A_Const)


def default_sql(value: str | int | float | bool) -> str:
    """A plan default as SQL text: strings are SQL expressions, other scalars are literals."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
