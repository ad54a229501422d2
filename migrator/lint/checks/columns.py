"""Columns added or retyped: rules M011, M012, M013, M016, M017, M026, M034, M035 and
M036 (and the column options M005, M006, M008, M009 judge on ADD COLUMN).

Called from `alter_table` for ALTER TABLE ... ADD COLUMN / ALTER COLUMN TYPE, and from
`create` for the columns of CREATE TABLE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pglast import ast, enums

from migrator import pgtypes
from migrator.lint.model import (
    Stmt,
    Unit,
    func_names,
    is_null,
    names,
    rel,
    type_mods,
    type_name,
    type_sql,
)

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer

CT = enums.ConstrType

# 16- and 32-bit integers (as the parser names them): too small for a busy table's key.
SMALL_KEY_TYPES = frozenset({"int2", "int4", "serial", "serial4", "smallserial", "serial2"})


def add_column(
    a: Analyzer, stmt: Stmt, unit: Unit, schema: str, table: str, col: ast.ColumnDef, new: bool
) -> None:
    """Rules 5, 6, 8, 9, 11, 12, 13 (and 17, 26) for ALTER TABLE ... ADD COLUMN."""
    name = col.colname or ""
    a.tracker.columns.add((table, name))
    if col.typeName is not None:
        a.tracker.column_types[(table, name)] = col.typeName
    column_type_rules(a, stmt, table, col)
    key_type_rules(a, stmt, table, key_columns([col], []))
    if new:
        return
    constraints = [c for c in col.constraints or () if isinstance(c, ast.Constraint)]
    kinds = {c.contype for c in constraints}
    default = next((c.raw_expr for c in constraints if c.contype == CT.CONSTR_DEFAULT), None)
    default = default if default is not None else col.raw_default
    if col.typeName is not None and type_name(col.typeName) in pgtypes.SERIAL_TYPES:
        a.report("M013", stmt, f"adds {type_name(col.typeName)} column {table}.{name}: a rewrite")
    if CT.CONSTR_IDENTITY in kinds or (col.identity and col.identity != "\x00"):
        a.report("M013", stmt, f"adds identity column {table}.{name}: a rewrite")
    for c in constraints:
        if c.contype == CT.CONSTR_GENERATED and c.generated_kind != "v":
            a.report("M013", stmt, f"adds stored generated column {table}.{name}: a rewrite")
        if c.contype == CT.CONSTR_FOREIGN and not c.skip_validation:
            a.report(
                "M005",
                stmt,
                f"adds {table}.{name} with REFERENCES: the new foreign key is validated "
                "by a scan while both tables are locked",
            )
        if c.contype == CT.CONSTR_CHECK and not c.skip_validation:
            a.report(
                "M006",
                stmt,
                f"adds {table}.{name} with a CHECK: validated by a full scan under "
                "ACCESS EXCLUSIVE",
            )
        if c.contype == CT.CONSTR_UNIQUE:
            a.report("M008", stmt, f"adds {table}.{name} UNIQUE: index built under AE")
        if c.contype == CT.CONSTR_PRIMARY:
            a.report("M009", stmt, f"adds {table}.{name} PRIMARY KEY: index built under AE")
    if default is not None and not is_null(default):
        volatile_default(a, stmt, table, name, default)
    not_null = col.is_not_null or CT.CONSTR_NOTNULL in kinds or CT.CONSTR_PRIMARY in kinds
    # A generated or identity column is computed for every row, old ones included.
    computed = bool(kinds & {CT.CONSTR_GENERATED, CT.CONSTR_IDENTITY}) or (
        bool(col.identity) and col.identity != "\x00"
    )
    if not_null and not computed and (default is None or is_null(default)):
        a.report(
            "M012",
            stmt,
            f"adds {table}.{name} NOT NULL with no DEFAULT: fails on existing rows, and the "
            "old version's INSERTs (which do not name it) fail",
        )


def volatile_default(a: Analyzer, stmt: Stmt, table: str, column: str, default: ast.Node) -> None:
    """Rule 11: a DEFAULT that rewrites the table (volatile; before 11, any)."""
    if a.version < 110000:
        a.report(
            "M011",
            stmt,
            f"adds {table}.{column} with a DEFAULT: before PostgreSQL 11 (server "
            f"{a.version // 10000}) that rewrites the table",
        )
        return
    called_names, subquery = func_names(default)
    called = set(called_names)
    if called & pgtypes.VOLATILE_FUNCTIONS or subquery:
        volatile = sorted(called & pgtypes.VOLATILE_FUNCTIONS) or ["a subquery"]
        a.report(
            "M011",
            stmt,
            f"adds {table}.{column} with a volatile DEFAULT ({', '.join(volatile)}): "
            "evaluated per row, a rewrite of the table",
        )
        return
    unknown = sorted(called - pgtypes.NONVOLATILE_FUNCTIONS)
    if not unknown:
        return
    verdict = a.live.volatile_functions(unknown) if a.live is not None else None
    if verdict:
        a.report(
            "M011",
            stmt,
            f"adds {table}.{column} with a DEFAULT calling a volatile function "
            f"({', '.join(unknown)}): a rewrite of the table",
        )
    elif verdict is None:
        a.report(
            "M011",
            stmt,
            f"adds {table}.{column} with a DEFAULT calling {', '.join(unknown)}; if it is "
            "volatile the table is rewritten (give --database-url to know)",
            "warning",
        )


def alter_type(
    a: Analyzer, stmt: Stmt, schema: str, table: str, column: str, col: ast.ColumnDef, new: bool
) -> None:
    """Rule 16: ALTER COLUMN ... TYPE that is not binary-coercible (and 17, 26)."""
    target = col.typeName
    if target is None:
        return
    column_type_rules(a, stmt, table, col, column)
    old = a.tracker.column_types.get((table, column))
    a.tracker.column_types[(table, column)] = target
    if new:
        return
    if old is None and a.live is not None:
        text = a.live.column_type(schema, table, column)
        old = pgtypes.parse_type(text) if text else None
    using = col.raw_default is not None
    if old is not None:
        rewrites = True if using else pgtypes.rewrites_parsed(old, target)
        if rewrites is False:
            return
        if rewrites is None:
            a.report(
                "M016",
                stmt,
                f"changes {table}.{column} from {type_sql(old)} to {type_sql(target)}: "
                "whether the table is rewritten depends on the server (the session's "
                "TimeZone, a domain's constraints), not on the types alone",
                "warning",
            )
            return
        a.report(
            "M016",
            stmt,
            f"changes {table}.{column} from {type_sql(old)} to {type_sql(target)}: not "
            "binary-coercible, so the table and its indexes are rewritten under ACCESS "
            "EXCLUSIVE",
        )
        return
    if not using and type_name(target) in ("text", "varchar"):
        a.report(
            "M016",
            stmt,
            f"changes {table}.{column} to {type_sql(target)}: without a rewrite only from "
            "varchar/text (give --database-url to know the current type)",
            "warning",
        )
        return
    a.report(
        "M016",
        stmt,
        f"changes the type of {table}.{column} to {type_sql(target)}: a rewrite under "
        "ACCESS EXCLUSIVE, and clients of the old type break",
    )


def column_type_rules(
    a: Analyzer, stmt: Stmt, table: str, col: ast.ColumnDef, column: str | None = None
) -> None:
    """Rules 17 (varchar(n), char(n)) and 26 (json) for a column's type."""
    if col.typeName is None:
        return
    name = column or col.colname
    base = type_name(col.typeName)
    if base in ("varchar", "bpchar") and type_mods(col.typeName):
        a.report(
            "M017",
            stmt,
            f"{table}.{name} is {type_sql(col.typeName)}: changing the length later "
            "needs ACCESS EXCLUSIVE; use text with a CHECK on length",
        )
    if base == "json":
        a.report(
            "M026",
            stmt,
            f"{table}.{name} is json: no equality operator, DISTINCT and GROUP BY fail; use jsonb",
        )
    if base in pgtypes.SERIAL_TYPES and a.version >= 100000:
        a.report(
            "M035",
            stmt,
            f"{table}.{name} is {base}: an identity column does the same without a "
            "separately owned sequence",
        )
    if base == "timestamp":
        a.report(
            "M036",
            stmt,
            f"{table}.{name} is timestamp without time zone: values from sessions in other "
            "time zones cannot be compared; use timestamptz",
        )


def key_type_rule(a: Analyzer, stmt: Stmt, table: str, column: str, references: str | None) -> None:
    """Rule 34: a new key column that is int or smallint: a primary key, or a column
    referencing a key the same plan or file creates (``references``). A column
    referencing an existing key has to match that key's type: widening is the key's own
    change, so it is not judged here. Only columns the plan or file adds are judged."""
    if references is not None and not a.new(references):
        return
    tn = a.tracker.column_types.get((table, column))
    if tn is None or type_name(tn) not in SMALL_KEY_TYPES:
        return
    role = "primary key" if references is None else f"column referencing {references}"
    a.report(
        "M034",
        stmt,
        f"{table}.{column} is {type_sql(tn)} for a {role}: it runs out on a busy table, and "
        "widening it later rewrites every table that uses it; use bigint",
    )


def key_type_rules(a: Analyzer, stmt: Stmt, table: str, keys: list[tuple[str, str | None]]) -> None:
    """Rule 34 for the key columns of one statement. A primary key column that also
    references an existing key is bounded by that key, so it is judged as a reference."""
    bound = {column for column, references in keys if references and not a.new(references)}
    for column, references in keys:
        if references is None and column in bound:
            continue
        key_type_rule(a, stmt, table, column, references)


def key_columns(
    table_columns: list[ast.ColumnDef], constraints: list[ast.Constraint]
) -> list[tuple[str, str | None]]:
    """The key columns among columns and table constraints, each with the table it
    references (None for a primary key)."""
    found: list[tuple[str, str | None]] = []
    for col in table_columns:
        for c in col.constraints or ():
            if isinstance(c, ast.Constraint) and c.contype == CT.CONSTR_PRIMARY:
                found.append((col.colname or "", None))
            elif isinstance(c, ast.Constraint) and c.contype == CT.CONSTR_FOREIGN:
                found.append((col.colname or "", rel(c.pktable)))
    for con in constraints:
        if con.contype == CT.CONSTR_PRIMARY:
            found += [(k, None) for k in names(con.keys)]
        elif con.contype == CT.CONSTR_FOREIGN:
            found += [(k, rel(con.pktable)) for k in names(con.fk_attrs)]
    return found
