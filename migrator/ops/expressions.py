"""What operations need to know about SQL expressions written in a plan, asked of pglast.

pglast is PostgreSQL's own parser; migrator never parses SQL by hand.
"""

from __future__ import annotations

from typing import Any

import pglast
from pglast import ast
from pglast.stream import RawStream
from pglast.visitors import Visitor

from migrator.sqltext import dollar_quoted, ident


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


class _TypeNames(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def visit_TypeName(self, ancestors: Any, node: ast.TypeName) -> None:
        parts = [f.sval for f in node.names or () if isinstance(f, ast.String) and f.sval]
        name = ".".join(parts)
        if parts and name not in self.names:
            self.names.append(name)


def type_names(expression: str) -> list[str]:
    """The type names an expression casts to (``'x'::mood`` gives ``mood``; built-in types
    come qualified as PostgreSQL spells them, ``pg_catalog.int4``)."""
    visitor = _TypeNames()
    visitor(parse_expression(expression))
    return visitor.names


class _Qualifier(Visitor):
    def __init__(self, columns: set[str], alias: str) -> None:
        super().__init__()
        self.columns, self.alias = columns, alias

    def visit_ColumnRef(self, ancestors: Any, node: ast.ColumnRef) -> None:
        fields = list(node.fields or ())
        if (
            len(fields) == 1
            and isinstance(fields[0], ast.String)
            and fields[0].sval in self.columns
        ):
            node.fields = (ast.String(sval=self.alias), fields[0])


def qualified(expression: str, columns: set[str], alias: str = "new") -> str | None:
    """The expression with its bare column names read from ``alias`` (``NEW.col``), for
    a trigger's WHEN condition; None when it holds a subquery, which WHEN refuses."""
    if has_subquery(expression):
        return None
    node = parse_expression(expression)
    _Qualifier(columns, alias)(node)
    return str(RawStream()(node))


class _SubLinks(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found = False

    def visit_SubLink(self, ancestors: Any, node: ast.SubLink) -> None:
        self.found = True


def has_subquery(expression: str) -> bool:
    """True when the expression holds a subquery (``(SELECT ...)``, ``EXISTS``, ``IN``)."""
    visitor = _SubLinks()
    visitor(parse_expression(expression))
    return visitor.found


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


def row_variables(columns: list[str], types: dict[str, str]) -> str:
    """DECLARE lines making each of ``columns`` a variable holding the row's value, so a
    plan's expression reads bare column names in a trigger function as everywhere else."""
    return "".join(f"  {ident(c)} {types[c]} := NEW.{ident(c)};\n" for c in columns)


def trigger_function_sql(function: str, declare: str, body: str) -> str:
    """CREATE OR REPLACE FUNCTION ``function``() RETURNS trigger, in PL/pgSQL, of the
    DECLARE lines and the statements between BEGIN and END given. It keeps the
    search_path it is created under: the plan's expressions in it were checked with the
    plan's schema first, whatever search_path the application's sessions use."""
    return (
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger\n"
        "LANGUAGE plpgsql SET search_path FROM CURRENT AS "
        + dollar_quoted(f"\nDECLARE\n{declare}BEGIN\n{body}END\n")
    )
