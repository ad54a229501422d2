"""PostgreSQL's facts about types and functions: which changes rewrite a table.

The one copy of these facts. ops (alter_column: in place or a shadow column), verify
(does an in-place retype keep the old version's writes) and the lint (M011 volatile
defaults, M013 serial columns, M016 type changes) must ask this module and keep no list
of their own. tests/test_pgtypes.py checks every answer against a real server.

- `rewrites(old_type, new_type)`: does ALTER COLUMN ... TYPE rewrite the table?
  (`rewrites_parsed` takes pglast TypeNames, as the lint has them.)
- `SERIAL_TYPES` / `is_serial(type_sql)`: serial is CREATE TABLE shorthand, no type.
- `is_volatile_function(name)`: is a built-in function volatile (a DEFAULT calling it is
  evaluated per row, so ADD COLUMN rewrites the table)?

Answers are True, False, or None for "cannot know without the server": user-defined
types, domains, and timestamp <-> timestamptz (no rewrite only when the session's
TimeZone is UTC).
"""

from __future__ import annotations

from dataclasses import dataclass

import pglast
from pglast import ast

__all__ = [
    "BINARY_CASTS",
    "INTEGER_BOUNDS",
    "NONVOLATILE_FUNCTIONS",
    "SERIAL_TYPES",
    "VOLATILE_FUNCTIONS",
    "identity_type",
    "is_serial",
    "is_volatile_function",
    "parse_type",
    "rewrites",
    "rewrites_parsed",
]

SERIAL_TYPES = frozenset({"smallserial", "serial", "bigserial", "serial2", "serial4", "serial8"})

# pg_proc.provolatile = 'v' for these (some come with extensions: uuid-ossp, pgcrypto;
# uuidv4/uuidv7 are PostgreSQL 18, random_normal 16).
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "gen_random_bytes",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "setval",
    }
)
# Stable or immutable built-ins seen in defaults: a DEFAULT calling only these is
# evaluated once by ADD COLUMN (PostgreSQL 11+). txid_current is stable: one value
# per transaction. (coalesce, greatest and the like are SQL constructs, not functions.)
NONVOLATILE_FUNCTIONS = frozenset(
    {
        "now",
        "statement_timestamp",
        "transaction_timestamp",
        "current_setting",
        "lower",
        "upper",
        "length",
        "concat",
        "to_char",
        "to_jsonb",
        "jsonb_build_object",
        "json_build_object",
        "array_length",
        "make_interval",
        "date_trunc",
        "txid_current",
        "pg_current_xact_id",
    }
)

_REG = (
    "regproc",
    "regprocedure",
    "regoper",
    "regoperator",
    "regclass",
    "regtype",
    "regconfig",
    "regdictionary",
    "regnamespace",
    "regrole",
    "regcollation",
)
# pg_cast rows with castmethod 'b' between built-in types (typname -> typname): the value
# is stored unchanged, a relabel. The test compares this with the server's pg_cast.
BINARY_CASTS = frozenset(
    {
        ("text", "bpchar"),
        ("text", "varchar"),
        ("varchar", "text"),
        ("varchar", "bpchar"),
        ("xml", "text"),
        ("xml", "varchar"),
        ("xml", "bpchar"),
        ("pg_node_tree", "text"),
        ("cidr", "inet"),
        ("bit", "varbit"),
        ("varbit", "bit"),
        ("int4", "oid"),
        ("oid", "int4"),
        ("pg_ndistinct", "bytea"),
        ("pg_dependencies", "bytea"),
        ("pg_mcv_list", "bytea"),
        *((r, "int4") for r in _REG),
        *((r, "oid") for r in _REG),
        *(("int4", r) for r in _REG),
        *(("oid", r) for r in _REG),
        ("regproc", "regprocedure"),
        ("regprocedure", "regproc"),
        ("regoper", "regoperator"),
        ("regoperator", "regoper"),
    }
)

# Built-in types that may be written without a schema (beside the SQL keywords pglast
# already qualifies with pg_catalog: integer, varchar, timestamp...).
_BUILTIN = frozenset(
    {
        *(name for pair in BINARY_CASTS for name in pair),
        "bool",
        "bytea",
        "char",
        "name",
        "int2",
        "int4",
        "int8",
        "float4",
        "float8",
        "numeric",
        "money",
        "date",
        "time",
        "timetz",
        "timestamp",
        "timestamptz",
        "interval",
        "uuid",
        "json",
        "jsonb",
        "jsonpath",
        "macaddr",
        "macaddr8",
        "point",
        "line",
        "lseg",
        "box",
        "path",
        "polygon",
        "circle",
        "tsvector",
        "tsquery",
        "pg_lsn",
        "int4range",
        "int8range",
        "numrange",
        "tsrange",
        "tstzrange",
        "daterange",
    }
)

# Types whose length coercion has a support function that turns a widening into a
# relabel (varchar_support, varbit_support, numeric_support, timestamp_support,
# time_support, interval_support in PostgreSQL's utils/adt).
_TEMPORAL = frozenset({"timestamp", "timestamptz", "time", "timetz"})
_MAX_PRECISION = 6  # MAX_TIMESTAMP_PRECISION, MAX_TIME_PRECISION, MAX_INTERVAL_PRECISION
_TIMEZONE_DEPENDENT = frozenset({("timestamp", "timestamptz"), ("timestamptz", "timestamp")})

# interval typmods: the range is a bit mask of fields (datetime.h INTERVAL_MASK); a
# range without a precision has the full one.
_INTERVAL_FIELD_BITS = ((12, 0), (11, 1), (10, 2), (3, 3), (1, 4), (2, 5))  # SECOND..YEAR
_INTERVAL_FULL_PRECISION = 0xFFFF


@dataclass(frozen=True)
class _Type:
    name: str
    mods: tuple[int, ...]
    array: bool
    builtin: bool
    schema: str | None


def parse_type(type_sql: str) -> ast.TypeName | None:
    """A type written as SQL (as a plan or format_type writes it) as pglast's TypeName."""
    try:
        stmts = pglast.parse_sql(f"SELECT NULL::{type_sql}")
    except pglast.parser.ParseError:
        return None
    if len(stmts) != 1:
        return None
    select = stmts[0].stmt
    if not isinstance(select, ast.SelectStmt) or not select.targetList:
        return None
    target = select.targetList[0]
    if isinstance(target, ast.ResTarget) and isinstance(target.val, ast.TypeCast):
        return target.val.typeName
    return None


def _normal(tn: ast.TypeName) -> _Type | None:
    names = [n.sval for n in tn.names or () if isinstance(n, ast.String) and n.sval]
    if not names or len(names) > 2 or tn.pct_type or tn.setof:
        return None
    mods = []
    for mod in tn.typmods or ():
        value = mod.val if isinstance(mod, ast.A_Const) else mod
        if not isinstance(value, ast.Integer):
            return None
        mods.append(int(value.ival or 0))
    schema = names[0] if len(names) == 2 else None
    name = names[-1]
    builtin = (schema is None and name in _BUILTIN) or schema == "pg_catalog"
    return _Type(name, tuple(mods), bool(tn.arrayBounds), builtin, schema)


def rewrites(old_type: str, new_type: str) -> bool | None:
    """Does ``ALTER TABLE ... ALTER COLUMN c TYPE new_type`` (no USING) rewrite the table
    when c is ``old_type``? True, False, or None where the server must be asked.

    Types as SQL: ``varchar(20)``, ``character varying(20)``, ``timestamp(3) with time
    zone``, ``numeric(10,2)``, ``text[]``. No rewrite means PostgreSQL relabels the column
    in the catalog (a binary-coercible cast, or a length coercion its support function
    proves a no-op): varchar(n) to varchar(m >= n), varchar or text; text to varchar;
    numeric(p,s) to numeric(q >= p,s) or numeric; time/timestamp precision up (or to 6,
    or none); varbit(n) to varbit(m >= n); interval to a finer or equal range and
    precision; cidr to inet; and so on along pg_cast's binary casts.
    """
    old, new = parse_type(old_type), parse_type(new_type)
    if old is None or new is None:
        return None
    return rewrites_parsed(old, new)


def rewrites_parsed(old: ast.TypeName, new: ast.TypeName) -> bool | None:
    """`rewrites` for types already parsed by pglast (the lint's parse trees)."""
    o, n = _normal(old), _normal(new)
    if o is None or n is None:
        return None
    if not (o.builtin and n.builtin):
        return False if o == n else None  # user types and domains: the server knows
    if o.array or n.array:
        # An element-wise change is an ArrayCoerceExpr, which always rewrites.
        return (o.name, o.mods, o.array) != (n.name, n.mods, n.array)
    if o.name == n.name:
        return _same_type_rewrites(o.name, o.mods, n.mods)
    if (o.name, n.name) in _TIMEZONE_DEPENDENT:
        # timestamp <-> timestamptz is a relabel only under TimeZone UTC; a precision
        # below 6 on the new type is a length coercion of an unknown precision.
        if n.mods and n.mods[0] < _MAX_PRECISION:
            return True
        return None
    if (o.name, n.name) in BINARY_CASTS:
        # The relabelled value has no typmod, so any limit on the new type is checked.
        return _same_type_rewrites(n.name, (), n.mods)
    return True


def _same_type_rewrites(name: str, old: tuple[int, ...], new: tuple[int, ...]) -> bool:
    """Same type, other modifiers (``()`` is none: no limit)."""
    if old == new or not new:
        return False
    if name in ("varchar", "varbit"):
        return not (old and new[0] >= old[0])
    if name == "numeric":
        if not old:
            return True
        old_scale = old[1] if len(old) > 1 else 0
        new_scale = new[1] if len(new) > 1 else 0
        return not (new_scale == old_scale and new[0] >= old[0])
    if name in _TEMPORAL:
        return not (new[0] >= _MAX_PRECISION or (old and new[0] >= old[0]))
    if name == "interval":
        return _interval_rewrites(old, new)
    return True  # bpchar, bit: the length coercion has no support function


def _interval_rewrites(old: tuple[int, ...], new: tuple[int, ...]) -> bool:
    """interval_support: a no-op when the least field stays or gets finer while the
    sub-second precision stays or grows (precision matters only down to seconds)."""

    def least_field(mods: tuple[int, ...]) -> int:
        if not mods:
            return 0
        return next((field for bit, field in _INTERVAL_FIELD_BITS if mods[0] & (1 << bit)), 0)

    def precision(mods: tuple[int, ...]) -> int:
        return mods[1] if len(mods) > 1 else _INTERVAL_FULL_PRECISION

    old_least, new_least = least_field(old), least_field(new)
    new_precision = precision(new)
    noop = new_least <= old_least and (
        old_least > 0 or new_precision >= _MAX_PRECISION or new_precision >= precision(old)
    )
    return not noop


def is_serial(type_sql: str) -> bool:
    """True for serial, bigserial, ... (CREATE TABLE shorthand for a sequence default)."""
    return type_sql.strip().lower() in SERIAL_TYPES


def is_volatile_function(name: str) -> bool | None:
    """True for a function PostgreSQL marks volatile, False for a known stable or
    immutable one, None when unknown (ask pg_proc.provolatile)."""
    bare = name.lower().rsplit(".", 1)[-1]
    if bare in VOLATILE_FUNCTIONS:
        return True
    if bare in NONVOLATILE_FUNCTIONS:
        return False
    return None


# What an identity column may be (PostgreSQL: "identity column type must be smallint,
# integer, or bigint"), with each type's range: a sequence of the type counts within it,
# and its default MINVALUE/MAXVALUE are these bounds (or 1 / -1 by direction).
INTEGER_BOUNDS = {
    "int2": (-(2**15), 2**15 - 1),
    "int4": (-(2**31), 2**31 - 1),
    "int8": (-(2**63), 2**63 - 1),
}


def identity_type(type_sql: str) -> str | None:
    """``int2``, ``int4`` or ``int8`` for a type an identity column may have, else None."""
    tn = parse_type(type_sql)
    t = _normal(tn) if tn is not None else None
    if t is None or t.array or t.mods or not t.builtin or t.name not in INTEGER_BOUNDS:
        return None
    return t.name
