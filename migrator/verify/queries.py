"""Query sets: the statements a code version runs, each with the file and line it came from.

A query set is a folder of ``.sql`` files (and ``.yaml`` lists), one ``.sql`` file, or a
YAML list of ``{name, sql}``. Statements are split by PostgreSQL's own scanner and parsed
by its parser (pglast); placeholders written ``$1``, ``%(name)s``, ``%s`` or ``:name`` are
found among the scanner's tokens (so a ``:name`` inside a string or a comment is left
alone) and rewritten to ``$n``, the only form PREPARE takes.
"""

from __future__ import annotations

import gc
import operator
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pglast
import yaml
from pglast import ast, parser

from migrator.errors import UsageError

# sqlc and friends name a query with a comment line just above it: ``-- name: GetUser :one``.
_NAME_COMMENT = re.compile(r"^\s*--\s*name:\s*(\S+)", re.MULTILINE)


@dataclass
class Query:
    """One statement of a query set."""

    name: str
    file: str
    line: int
    text: str  # as written
    sql: str  # placeholders normalised to $n
    params: list[str] = field(default_factory=list)  # $n -> the name it was written with
    tree: ast.Node | None = None  # the parsed statement; None when it does not parse
    error: str | None = None  # the parser's message when it does not parse
    error_line: int | None = None
    # Every node of the tree, walked once and kept: each of the six cells reads it.
    nodes: list[ast.Node] | None = field(default=None, repr=False, compare=False)
    # Of those, the statements and WITH queries (`statement_nodes`): all the static
    # checks of a cell look at, a few nodes of tens.
    statements: list[ast.Node] | None = field(default=None, repr=False, compare=False)

    @property
    def location(self) -> str:
        """``file:line``."""
        return f"{self.file}:{self.line}"

    @property
    def preparable(self) -> bool:
        """True for the statements PREPARE takes (SELECT, INSERT, UPDATE, DELETE, MERGE, VALUES)."""
        return type(self.tree) in _PREPARABLE  # each cell asks twice a query: no union built


# pglast's node classes have no subclasses.
_PREPARABLE = frozenset(
    (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
)


# -- placeholders ------------------------------------------------------------------------


def _is_word(token: Any) -> bool:
    """An identifier or keyword token: what follows ``:`` or ``%(`` in a placeholder."""
    return bool(token.name == "IDENT" or token.kind != "NO_KEYWORD")


def normalise_placeholders(text: str) -> tuple[str, list[str]]:
    """``text`` with ``%(name)s``, ``%s`` and ``:name`` placeholders rewritten to ``$n``.

    Returns the new text and, for each ``$n`` (index n-1), the name it was written with
    (empty when the text needed no rewriting). The same name gets the same number;
    existing ``$n`` keep theirs.
    """
    if "%" not in text and ":" not in text.replace("::", ""):
        return text, []  # no % and no lone ':' (casts aside): nothing to rewrite
    try:
        tokens = parser.scan(text)
    except pglast.parser.ParseError:
        return text, []
    highest = 0
    for tok in tokens:
        if tok.name == "PARAM":
            highest = max(highest, int(text[tok.start + 1 : tok.end + 1]))
    names: dict[str, int] = {}
    positional = 0
    replacements: list[tuple[int, int, int]] = []  # (start, end exclusive, number)
    bracket_depth = 0
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.name == "ASCII_91":  # '['
            bracket_depth += 1
        elif tok.name == "ASCII_93":  # ']'
            bracket_depth = max(0, bracket_depth - 1)
        elif (
            tok.name == "ASCII_58"  # ':' alone; '::' is a TYPECAST token
            and bracket_depth == 0  # a[1:n] is an array slice, not a placeholder
            and nxt is not None
            and nxt.start == tok.end + 1
            and _is_word(nxt)
        ):
            name = text[nxt.start : nxt.end + 1].strip('"')
            if name not in names:
                highest += 1
                names[name] = highest
            replacements.append((tok.start, nxt.end + 1, names[name]))
            i += 2
            continue
        elif tok.name == "ASCII_37" and nxt is not None and nxt.start == tok.end + 1:  # '%'
            if nxt.name == "ASCII_40" and i + 4 < len(tokens):  # %(name)s
                ident, close, s = tokens[i + 2], tokens[i + 3], tokens[i + 4]
                if (
                    _is_word(ident)
                    and close.name == "ASCII_41"
                    and text[s.start : s.end + 1] == "s"
                    and s.start == close.end + 1
                ):
                    name = text[ident.start : ident.end + 1]
                    if name not in names:
                        highest += 1
                        names[name] = highest
                    replacements.append((tok.start, s.end + 1, names[name]))
                    i += 5
                    continue
            elif text[nxt.start : nxt.end + 1] == "s":  # %s, positional
                highest += 1
                positional += 1
                replacements.append((tok.start, nxt.end + 1, highest))
                i += 2
                continue
        i += 1
    if not replacements:
        return text, []
    out: list[str] = []
    last = 0
    for start, end, number in replacements:
        out.append(text[last:start])
        out.append(f"${number}")
        last = end
    out.append(text[last:])
    labels = [f"${n}" for n in range(1, highest + 1)]
    for name, number in names.items():
        labels[number - 1] = f":{name}"
    return "".join(out), labels


# -- splitting and parsing -----------------------------------------------------------------


# What PostgreSQL's scanner takes for white space, and the statement separator.
_BETWEEN = " \t\n\r\f;"


def _split(text: str) -> list[tuple[int, int]]:
    """(start, stop) of each statement: from its first token to its last, ``;`` excluded.

    Cut at the scanner's ``;`` tokens, so semicolons inside strings, quoted names,
    dollar-quoted bodies and comments never split a statement. libpg_query's split by
    the scanner does that in C, 5x faster than listing the tokens in Python, but it
    silently drops a statement that starts with an unknown word (exactly the typo a check
    must report) and keeps a statement's comments; so its cut is taken only where the
    text between the statements it found is white space and ``;`` alone, and a statement
    that holds a comment or a ``;`` (in a string, or a body it kept whole) is cut again
    by the tokens (`_split_tokens`): the same pieces either way.
    """
    try:
        found = parser.split(text, with_parser=False, only_slices=True)
    except pglast.parser.ParseError:
        return _split_tokens(text)  # raises the scanner's own error, as before
    pieces: list[tuple[int, int]] = []
    end = 0
    for piece in found:
        start, stop = piece.start, piece.stop
        if text[end:start].strip(_BETWEEN):
            return _split_tokens(text)  # something it dropped
        statement = text[start:stop]
        if ";" in statement or "--" in statement or "/*" in statement:
            pieces += [(start + a, start + b) for a, b in _split_tokens(statement)]
        else:
            pieces.append((start, stop))
        end = stop
    if text[end:].strip(_BETWEEN):
        return _split_tokens(text)
    return pieces


def _split_tokens(text: str) -> list[tuple[int, int]]:
    """`_split` by the scanner's tokens, listed in Python."""
    tokens = [t for t in parser.scan(text) if t.name not in ("SQL_COMMENT", "C_COMMENT")]
    pieces: list[tuple[int, int]] = []
    start: int | None = None
    stop = 0
    for tok in tokens:
        if tok.name == "ASCII_59":  # ';'
            if start is not None:
                pieces.append((start, stop))
            start = None
            continue
        if start is None:
            start = tok.start
        stop = tok.end + 1
    if start is not None:
        pieces.append((start, stop))
    return pieces


# Parse trees by statement text, shared by the query sets of one check: the versions
# share most of their queries, and building pglast's tree is most of reading a query.
# With each tree, its nodes (`tree_nodes`) and statements (`statement_nodes`), or the
# parser's message and offset.
Parsed = dict[
    str,
    tuple[ast.Node | None, list[ast.Node] | None, list[ast.Node] | None, str | None, int | None],
]

# For each node class, a function giving the values of its attributes that may hold nodes,
# last first (the order they go on the stack); None for a leaf class (String, Integer...).
_CHILDREN: dict[type[ast.Node], Callable[[Any], tuple[Any, ...]] | None] = {}


def _may_hold_nodes(info: Any) -> bool:
    """Whether an attribute, by pglast's declared Python types of it, may hold a node or a
    list of them (a name, a number, a flag or an enum never does)."""
    kinds = info.py_type if isinstance(info.py_type, tuple) else (info.py_type,)
    return any(
        kind in (list, tuple) or (isinstance(kind, type) and issubclass(kind, ast.Node))
        for kind in kinds
    )


def _children(cls: type[ast.Node]) -> Callable[[Any], tuple[Any, ...]] | None:
    slots = cls.__slots__  # type: ignore[attr-defined]  # pglast: each attribute's types
    if isinstance(slots, dict):
        names = tuple(reversed([n for n, info in slots.items() if _may_hold_nodes(info)]))
    else:  # no types declared: every attribute
        names = tuple(reversed(tuple(slots)))
    get: Callable[[Any], tuple[Any, ...]] | None = None
    if len(names) > 1:
        get = operator.attrgetter(*names)
    elif names:
        one = operator.attrgetter(names[0])
        get = lambda node: (one(node),)  # noqa: E731
    _CHILDREN[cls] = get
    return get


def tree_nodes(tree: ast.Node) -> list[ast.Node]:
    """Every node of a parse tree, depth first: `migrator.ops.sql.walk_nodes`' order,
    without a generator a level, and reading only the attributes that may hold nodes
    (the query's cells read the list, so it is built once, while the query set is read)."""
    found: list[ast.Node] = []
    stack: list[Any] = [tree]
    pop, push, add = stack.pop, stack.extend, found.append
    node_type, sequence, children = ast.Node, (tuple, list), _CHILDREN
    while stack:
        item = pop()
        if item is None:
            continue
        if isinstance(item, node_type):
            add(item)
            cls = type(item)
            get = children[cls] if cls in children else _children(cls)
            if get is not None:
                push(get(item))
        elif isinstance(item, sequence):
            push(item[::-1])
    return found


_STATEMENT_KINDS = (
    ast.SelectStmt,
    ast.InsertStmt,
    ast.UpdateStmt,
    ast.DeleteStmt,
    ast.CommonTableExpr,
)


def statement_nodes(nodes: list[ast.Node]) -> list[ast.Node]:
    """The SELECT, INSERT, UPDATE and DELETE statements among a tree's nodes (subqueries
    and WITH queries included) and its WITH queries' entries, in the nodes' order."""
    return [n for n in nodes if isinstance(n, _STATEMENT_KINDS)]


def parse_statements(
    text: str,
    file: str,
    first_line: int = 1,
    name: str | None = None,
    parsed: Parsed | None = None,
) -> list[Query]:
    """Every statement of ``text``; ``first_line`` is the line ``text`` starts on in ``file``.
    ``parsed`` keeps the trees by statement text, for the next call to reuse."""
    try:
        pieces = _split(text)
    except pglast.parser.ParseError as exc:
        # The scanner itself failed (an unterminated string or comment): one bad query.
        return [
            Query(
                name=name or f"{Path(file).name}:{first_line}",
                file=file,
                line=first_line,
                text=text,
                sql=text,
                error=f"cannot be scanned: {exc}",
                error_line=first_line,
            )
        ]
    queries: list[Query] = []
    previous_end = 0
    base = Path(file).name
    # Once for the whole text: setting a class attribute resets Python's attribute caches
    # of every node class, which per statement cost more than the checks it saves.
    with unchecked_trees():
        line, counted = first_line, 0  # the line at offset `counted`
        for number, (start, stop) in enumerate(pieces, start=1):
            line += text.count("\n", counted, start)
            counted = start
            statement = text[start:stop]
            label = _statement_name(text[previous_end:start])
            previous_end = stop
            if name is not None:
                label = name if len(pieces) == 1 else f"{name}#{number}"
            queries.append(_parsed(label or f"{base}:{line}", file, line, statement, parsed))
    return queries


def _statement_name(preamble: str) -> str | None:
    """The name a ``-- name: X`` comment above the statement gives it."""
    found = _NAME_COMMENT.findall(preamble)
    return str(found[-1]) if found else None


# pglast's parser builds each node through ``Node.__setattr__``, which checks and coerces
# every value (an import and a few lookups per attribute): 95% of a parse. The values its
# parser passes are of the checked types already (tuples, bools, enum members, nodes),
# but for a constant's Boolean, given as an int and made a bool by the check, so that one
# keeps it (tests/test_check_queries.py compares the trees). While a query set is parsed
# the check is set aside, and put back as soon as no thread parses any more.
# Python's cyclic garbage collector is paused meanwhile too: a set's trees are tens of
# thousands of new objects, so it would run every few hundred nodes and walk the trees
# built so far each time (a sixth of reading bench/check.py's queries), and they hold no
# cycle for it to find. It runs as usual once the block ends.
_FAST = threading.Lock()
_fast_users = 0
_paused_gc = False
_checked_setattr = ast.Node.__dict__["__setattr__"]
_KEEP_CHECKED = (ast.Boolean,)


@contextmanager
def unchecked_trees() -> Iterator[None]:
    """pglast's trees built without its per-attribute checks, and with the cyclic garbage
    collector paused, inside the block (7x faster on a query set; the same trees).
    Re-entrant and shared between threads."""
    global _fast_users, _paused_gc
    with _FAST:
        _fast_users += 1
        if _fast_users == 1:
            for cls in _KEEP_CHECKED:
                cls.__setattr__ = _checked_setattr  # type: ignore[method-assign]
            ast.Node.__setattr__ = object.__setattr__  # type: ignore[method-assign,assignment]
            _paused_gc = gc.isenabled()  # one the caller paused stays so
            gc.disable()
    try:
        yield
    finally:
        with _FAST:
            _fast_users -= 1
            if _fast_users == 0:
                ast.Node.__setattr__ = _checked_setattr  # type: ignore[method-assign]
                for cls in _KEEP_CHECKED:
                    del cls.__setattr__
                if _paused_gc:
                    gc.enable()


def _parse_one(
    sql: str,
) -> tuple[ast.Node | None, list[ast.Node] | None, list[ast.Node] | None, str | None, int | None]:
    """The tree of one statement, its nodes and its statements, or the parser's message
    and the offset it points at."""
    try:
        stmts = pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        position = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        return None, None, None, message, position
    if len(stmts) != 1 or stmts[0].stmt is None:
        return None, None, None, "expected exactly one statement", None
    nodes = tree_nodes(stmts[0].stmt)
    return stmts[0].stmt, nodes, statement_nodes(nodes), None, None


def _parsed(name: str, file: str, line: int, statement: str, parsed: Parsed | None = None) -> Query:
    sql, params = normalise_placeholders(statement)
    query = Query(name=name, file=file, line=line, text=statement, sql=sql, params=params)
    found = parsed.get(sql) if parsed is not None else None
    if found is None:
        found = _parse_one(sql)
        if parsed is not None:
            parsed[sql] = found
    tree, nodes, statements, error, position = found
    if error is not None:
        query.error = error
        query.error_line = line + (sql.count("\n", 0, position) if position else 0)
        return query
    query.tree = tree
    query.nodes = nodes
    query.statements = statements
    return query


# -- loading -------------------------------------------------------------------------------


def _display(path: Path, root: Path | None) -> str:
    """A path as findings show it: relative to ``root`` (the working folder) when inside it."""
    resolved = path.resolve()
    base = (root or Path.cwd()).resolve()
    try:
        return str(resolved.relative_to(base))
    except ValueError:
        return str(resolved)


def load_sql_file(
    path: Path, root: Path | None = None, parsed: Parsed | None = None
) -> list[Query]:
    """The statements of one ``.sql`` file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read query file {path}: {exc}") from None
    return parse_statements(text, _display(path, root), parsed=parsed)


def load_yaml_file(
    path: Path, root: Path | None = None, parsed: Parsed | None = None
) -> list[Query]:
    """The queries of a YAML list of ``{name, sql}``, each at the line its SQL starts."""
    display = _display(path, root)
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read query file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{display}:{mark.line + 1}:{mark.column + 1}" if mark else display
        raise UsageError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if node is None:
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise UsageError(
            f"{display}:{node.start_mark.line + 1}:{node.start_mark.column + 1}: "
            "a query file is a list of {name, sql}"
        )
    queries: list[Query] = []
    for item in node.value:
        where = f"{display}:{item.start_mark.line + 1}:{item.start_mark.column + 1}"
        if not isinstance(item, yaml.MappingNode):
            raise UsageError(f"{where}: each query is a map {{name, sql}}")
        fields = {k.value: v for k, v in item.value if isinstance(k, yaml.ScalarNode)}
        unknown = set(fields) - {"name", "sql"}
        if unknown:
            raise UsageError(
                f"{where}: unknown key {sorted(unknown)[0]!r} (a query takes name, sql)"
            )
        sql_node = fields.get("sql")
        if not isinstance(sql_node, yaml.ScalarNode) or not str(sql_node.value).strip():
            raise UsageError(f"{where}: a query needs `sql:` text")
        name_node = fields.get("name")
        name = str(name_node.value) if isinstance(name_node, yaml.ScalarNode) else None
        # A block scalar (| or >) starts on the line after its indicator.
        first = sql_node.start_mark.line + 1 + (1 if sql_node.style in ("|", ">") else 0)
        queries += parse_statements(
            str(sql_node.value), display, first, name or f"{path.name}:{first}", parsed
        )
    return queries


def load_query_set(
    path: str | Path, root: Path | None = None, parsed: Parsed | None = None
) -> list[Query]:
    """A query set from a folder, a ``.sql`` file or a ``.yaml``/``.yml`` list; ``parsed``
    shares the parse trees with the other query sets of the same check."""
    p = Path(path)
    if p.is_dir():
        files = sorted(
            f for f in p.rglob("*") if f.is_file() and f.suffix in (".sql", ".yaml", ".yml")
        )
        queries: list[Query] = []
        with unchecked_trees():  # once for the folder: each switch costs as much as a file
            for f in files:
                queries += load_query_set(f, root, parsed)
        return queries
    if not p.exists():
        raise UsageError(f"query set {p} does not exist")
    if p.suffix == ".sql":
        return load_sql_file(p, root, parsed)
    if p.suffix in (".yaml", ".yml"):
        return load_yaml_file(p, root, parsed)
    raise UsageError(f"query set {p}: expected a folder, a .sql file or a .yaml list")


def relations(tree: ast.Node) -> Iterator[tuple[str | None, str]]:
    """(schema, name) of every table a statement names (CTE names excluded)."""
    ctes: set[str] = set()
    found: list[tuple[str | None, str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, ast.Node):
            if isinstance(node, ast.CommonTableExpr) and node.ctename:
                ctes.add(node.ctename)
            if isinstance(node, ast.RangeVar) and node.relname:
                found.append((node.schemaname, node.relname))
            for name in node:
                walk(getattr(node, name))
        elif isinstance(node, tuple | list):
            for item in node:
                walk(item)

    walk(tree)
    for schema, name in found:
        if schema is None and name in ctes:
            continue
        yield schema, name


__all__ = [
    "Parsed",
    "Query",
    "load_query_set",
    "normalise_placeholders",
    "parse_statements",
    "relations",
    "statement_nodes",
    "tree_nodes",
    "unchecked_trees",
]
