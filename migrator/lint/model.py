"""What the lint's checks read: statements, the units they run in, and what is known so far.

A `Stmt` is one pglast parse tree with its SQL text and its `Source` (where the plan or
file wrote it); a `Unit` is the statements of one transaction, or one statement that
runs alone. The `Tracker` holds what earlier statements of the same plan or file created
or proved; `UnitState` what the current transaction holds. The helpers below read names
and types out of parse trees.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import pglast
from pglast import ast, enums

from migrator.sqltext import ident

LintPhase = Literal["expand", "contract", "rollback"]


@dataclass(frozen=True)
class Source:
    """Where statements come from, and what the plan suppresses there."""

    operation: str | None = None
    file: str | None = None
    line: int | None = None
    column: int | None = None
    context: str = ""
    ignore: dict[str, str] = field(default_factory=dict)

    def location_text(self) -> str:
        """``file:line:column`` where known, else the operation's name."""
        if self.file and self.line:
            return f"{self.file}:{self.line}:{self.column or 1}"
        return self.operation or self.file or "<sql>"


@dataclass(frozen=True)
class Stmt:
    """One parsed statement, its SQL text, and where it stands."""

    node: ast.Node
    sql: str
    source: Source

    @cached_property
    def writes(self) -> list[ast.UpdateStmt | ast.DeleteStmt]:
        """Its UPDATE and DELETE statements, at the top or inside a WITH (two rules ask).

        A statement whose text has neither word holds neither: its tree is not walked."""
        if _WRITE_WORDS.search(self.sql) is None:
            return []
        return writes(self.node)


_WRITE_WORDS = re.compile("update|delete", re.IGNORECASE)


@dataclass
class Unit:
    """Statements that share one transaction, or one statement run alone."""

    statements: list[Stmt]
    transactional: bool


@dataclass
class Tracker:
    """What the statements seen so far created or proved."""

    tables: set[str] = field(default_factory=set)
    columns: set[tuple[str, str]] = field(default_factory=set)
    column_types: dict[tuple[str, str], ast.TypeName] = field(default_factory=dict)
    types: set[str] = field(default_factory=set)
    indexes: dict[str, str | None] = field(default_factory=dict)
    not_null_checks: dict[tuple[str, str], str] = field(default_factory=dict)
    validated_not_null: set[tuple[str, str]] = field(default_factory=set)
    validated_tables: set[str] = field(default_factory=set)
    foreign_keys: set[tuple[str, str]] = field(default_factory=set)
    # (table, name) of a foreign key added -> the (schema, table) it references.
    foreign_key_targets: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    # (table, name) of a foreign key added -> its columns (a DROP COLUMN drops it).
    foreign_key_columns: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # (table, name) of constraints dropped earlier in the file: the database's answer
    # about them is out of date from there on.
    dropped_constraints: set[tuple[str, str]] = field(default_factory=set)
    # Tables given a UNIQUE constraint, and (table, name) of constraints validated, so a
    # partitioned table's constraint added after each leaf's own is known to attach them.
    unique_tables: set[str] = field(default_factory=set)
    primary_tables: set[str] = field(default_factory=set)
    validated_constraints: set[tuple[str, str]] = field(default_factory=set)
    matviews: set[str] = field(default_factory=set)
    temp_tables: set[str] = field(default_factory=set)
    lock_timeout: bool = False
    statement_timeout: bool = False


@dataclass
class UnitState:
    """What one transaction holds while its statements are judged."""

    ae_tables: list[str] = field(default_factory=list)
    added: set[tuple[str, str]] = field(default_factory=set)
    renamed_tables: list[tuple[str, Stmt]] = field(default_factory=list)
    views: set[str] = field(default_factory=set)
    dropped_columns: set[tuple[str, str]] = field(default_factory=set)
    new_enum_values: dict[str, str] = field(default_factory=dict)
    local_lock_timeout: bool = False
    local_statement_timeout: bool = False
    reported_many_ae: bool = False
    # id() of the LOCK TABLE statements that take only what the next statement takes
    # anyway (rule M040's exemption): not counted again among the ACCESS EXCLUSIVE tables.
    locks_taken_anyway: set[int] = field(default_factory=set)


# -- names -------------------------------------------------------------------------------


def rel(node: ast.RangeVar | None) -> str:
    """The bare name of a relation ("" where there is none)."""
    return (node.relname or "") if node is not None else ""


def name_of(node: ast.Node | None) -> str:
    """The text of a String node ("" for anything else)."""
    return node.sval if isinstance(node, ast.String) and node.sval else ""


def names(nodes: Any) -> list[str]:
    """The texts of a list of String nodes (a qualified name)."""
    return [name_of(n) for n in nodes or ()]


def quote(name: str) -> str:
    """An identifier quoted for SQL the lint sends to the database."""
    return ident(name)


# -- types -------------------------------------------------------------------------------


def type_name(tn: ast.TypeName) -> str:
    """The bare name of a type (``varchar``, ``int4``, ``mood``)."""
    return names(tn.names)[-1]


def type_mods(tn: ast.TypeName) -> list[int]:
    """The integer type modifiers (``varchar(20)`` -> [20])."""
    mods = []
    for m in tn.typmods or ():
        if isinstance(m, ast.A_Const) and isinstance(m.val, ast.Integer):
            mods.append(int(m.val.ival or 0))
    return mods


def type_sql(tn: ast.TypeName) -> str:
    """A type as short text for messages."""
    mods = type_mods(tn)
    return type_name(tn) + (f"({', '.join(map(str, mods))})" if mods else "")


# -- expressions -------------------------------------------------------------------------


def walk(node: Any) -> Iterator[ast.Node]:
    """Every node of a parse tree, depth first, in the order written.

    A plain walk: pglast's Visitor inspects its own class on every call, which cost more
    than parsing over a file of a thousand statements."""
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Node):
            yield item
            children = [
                value
                for value in (getattr(item, name) for name in item)
                if isinstance(value, ast.Node | tuple | list)
            ]
            stack.extend(reversed(children))
        elif isinstance(item, tuple | list):
            stack.extend(reversed(item))


def func_names(node: Any) -> tuple[list[str], bool]:
    """The functions an expression calls (lower-cased), and whether it has a subquery."""
    called: list[str] = []
    subquery = False
    for found in walk(node):
        if isinstance(found, ast.FuncCall):
            called.append(names(found.funcname)[-1].lower())
        elif isinstance(found, ast.SubLink):
            subquery = True
    return called, subquery


def writes(node: Any) -> list[ast.UpdateStmt | ast.DeleteStmt]:
    """The UPDATE and DELETE statements of a tree (at the top or inside a WITH)."""
    return [n for n in walk(node) if isinstance(n, ast.UpdateStmt | ast.DeleteStmt)]


def strings(node: Any) -> list[str]:
    """The string constants of a tree."""
    return [
        n.val.sval
        for n in walk(node)
        if isinstance(n, ast.A_Const) and isinstance(n.val, ast.String) and n.val.sval is not None
    ]


def null_test_column(expr: ast.Node | None) -> str | None:
    """``col IS NOT NULL`` -> col."""
    if (
        isinstance(expr, ast.NullTest)
        and expr.nulltesttype == enums.NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
    ):
        return names(expr.arg.fields)[-1]
    return None


def null_test_of(expression: str) -> str | None:
    """The column of an expression written as SQL that is ``col IS NOT NULL``."""
    try:
        (raw,) = pglast.parse_sql(f"SELECT {expression}")
    except (pglast.parser.ParseError, ValueError):
        return None
    select = raw.stmt
    if isinstance(select, ast.SelectStmt) and select.targetList:
        target = select.targetList[0]
        if isinstance(target, ast.ResTarget):
            return null_test_column(target.val)
    return None


def option_on(options: Any, name: str) -> bool:
    """A boolean option of a statement's option list, read by its value as PostgreSQL
    does (defGetBoolean): ``(FULL)`` is on, ``(FULL false)``, ``(FULL off)``, ``(FULL 0)``
    are off."""
    for option in options or ():
        if not isinstance(option, ast.DefElem) or option.defname != name:
            continue
        value = option.arg
        if value is None:
            return True
        if isinstance(value, ast.Boolean):
            return bool(value.boolval)
        if isinstance(value, ast.Integer):
            return bool(value.ival)
        if isinstance(value, ast.String):
            return (value.sval or "").lower() in ("true", "on")
        return True
    return False


def is_null(node: ast.Node) -> bool:
    """The constant NULL."""
    return isinstance(node, ast.A_Const) and bool(node.isnull)


def is_zero(args: Any) -> bool:
    """A setting's value that is zero (``0``, ``'0ms'``, ``'0s'``)."""
    for arg in args or ():
        if isinstance(arg, ast.A_Const):
            value = arg.val
            if isinstance(value, ast.Integer) and value.ival == 0:
                return True
            if isinstance(value, ast.String) and (value.sval or "").strip() in ("0", "0ms", "0s"):
                return True
    return False


def statements_of(text: str) -> Iterator[tuple[ast.Node, str, int]]:
    """Each statement of SQL text: its parse tree, its text, and its character offset.

    Raises pglast's ParseError for text that does not parse.
    """
    for raw in pglast.parse_sql(text):
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        if raw.stmt is not None:
            yield raw.stmt, text[start:end].strip(), start
