"""migrator.pgtypes against real servers (PostgreSQL 18 embedded and Debian's 15).

For each pair of types: a table with a column of the old type is altered to the new one
(ALTER COLUMN TYPE, no USING, as alter_column runs it) and pg_class.relfilenode before
and after says whether the table was rewritten. `pgtypes.rewrites` must say the same
(None only where the answer depends on more than the types: the test shows it does),
and so must its users: alter_column's choice between in place and a shadow column, and
verify's "an in-place retype keeps the old version's writes".

The lint's rule M016 is held to it too: an error where the server rewrites, nothing
where it does not, a warning where pgtypes cannot know.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from migrator import pgtypes
from migrator.db.connection import make_engine
from migrator.engine.catalog import Catalog
from migrator.lint import lint_sql
from migrator.ops.alter_column import AlterColumn
from migrator.ops.base import Context
from migrator.verify.static import retype_keeps_writes
from tests.support.servers import Server

# (old type, new type): every ALTER here works without USING.
PAIRS = [
    # the same type
    ("integer", "int4"),
    ("text", "text"),
    ("varchar(10)", "character varying(10)"),
    # varchar, text, char
    ("varchar(10)", "varchar(20)"),
    ("varchar(20)", "varchar(10)"),
    ("varchar(10)", "varchar"),
    ("varchar", "varchar(10)"),
    ("varchar(10)", "text"),
    ("varchar", "text"),
    ("text", "varchar"),
    ("text", "varchar(10)"),
    ("char(5)", "char(10)"),
    ("char(10)", "char(5)"),
    ("char(5)", "bpchar"),
    ("char(5)", "text"),
    ("char(5)", "varchar(10)"),
    ("text", "char(5)"),
    ("text", "bpchar"),
    ("varchar(5)", "bpchar"),
    ("varchar(5)", "char(5)"),
    ("xml", "text"),
    # numeric
    ("numeric(10,2)", "numeric(12,2)"),
    ("numeric(10,2)", "numeric(10,2)"),
    ("numeric(10,2)", "numeric(8,2)"),
    ("numeric(10,2)", "numeric(12,3)"),
    ("numeric(10,2)", "numeric"),
    ("numeric", "numeric(10,2)"),
    ("numeric(10)", "numeric(12,0)"),
    ("decimal(10)", "numeric(12)"),
    ("numeric(10,2)", "numeric(12)"),
    # time and timestamp precision
    ("timestamp(3)", "timestamp(6)"),
    ("timestamp(3)", "timestamp"),
    ("timestamp(3)", "timestamp(4)"),
    ("timestamp", "timestamp(3)"),
    ("timestamp", "timestamp(6)"),
    ("timestamp(6)", "timestamp(3)"),
    ("timestamp(0) with time zone", "timestamptz(3)"),
    ("timestamptz(3)", "timestamptz(1)"),
    ("time(2)", "time(4)"),
    ("time", "time(2)"),
    ("time(2)", "time(1)"),
    ("timetz(1)", "time with time zone"),
    ("timetz", "timetz(5)"),
    ("timestamp(3)", "timestamptz(2)"),
    ("timestamp", "timestamptz(5)"),
    ("date", "timestamp"),
    ("timestamp", "date"),
    ("time", "timetz"),
    # interval ranges and precision
    ("interval day", "interval"),
    ("interval", "interval day"),
    ("interval second(2)", "interval second(4)"),
    ("interval second(4)", "interval second(2)"),
    ("interval day to second(2)", "interval day to second(1)"),
    ("interval(3)", "interval(6)"),
    ("interval(3)", "interval"),
    ("interval hour", "interval minute"),
    ("interval minute", "interval hour"),
    ("interval hour to minute", "interval day to second(3)"),
    ("interval year", "interval year to month"),
    ("interval month", "interval day"),
    # bit strings
    ("bit varying(5)", "varbit(10)"),
    ("varbit(10)", "varbit(5)"),
    ("varbit", "varbit(5)"),
    ("bit(5)", "varbit"),
    ("bit(5)", "varbit(10)"),
    ("bit(5)", "bit(10)"),
    ("varbit(5)", "bit(5)"),
    # other types
    ("integer", "bigint"),
    ("bigint", "integer"),
    ("smallint", "integer"),
    ("integer", "text"),
    ("integer", "numeric"),
    ("real", "double precision"),
    ("cidr", "inet"),
    ("inet", "cidr"),
    ("integer", "oid"),
    ("oid", "integer"),
    ("uuid", "text"),
    ("json", "jsonb"),
    ("jsonb", "json"),
    ("boolean", "text"),
    # arrays
    ("integer[]", "int4[]"),
    ("varchar(10)[]", "varchar(20)[]"),
    ("varchar[]", "text[]"),
    ("integer[]", "bigint[]"),
    # depends on the session's TimeZone (None)
    ("timestamp", "timestamptz"),
    ("timestamptz", "timestamp"),
    ("timestamp(3)", "timestamptz"),
    ("timestamp", "timestamptz(6)"),
    # user types (None but for the type itself)
    ("text", "short_text"),
    ("short_text", "text"),
    ("text", "plain_text"),
    ("mood", "mood"),
    ("mood", "public.mood"),
    ("mood", "text"),
]

USER_TYPES = (
    "CREATE DOMAIN short_text AS text CHECK (length(VALUE) < 10); "
    "CREATE DOMAIN plain_text AS text; "
    "CREATE TYPE mood AS ENUM ('sad', 'ok')"
)


@pytest.fixture(scope="module")
def db(server: Server) -> Iterator[str]:
    url = server.create_database("pgt")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(USER_TYPES)
    yield url
    server.drop_database(url)


def _retype(conn: psycopg.Connection[tuple[object, ...]], old: str, new: str) -> tuple[bool, str]:
    """ALTER COLUMN TYPE on a fresh one-row table: (was it rewritten, the new type as the
    server spells it)."""
    conn.execute("DROP TABLE IF EXISTS t")
    conn.execute(f"CREATE TABLE t (c {old})")
    conn.execute("INSERT INTO t VALUES (NULL)")
    query = "SELECT pg_relation_filenode('t')"
    before = conn.execute(query).fetchone()
    conn.execute(f"ALTER TABLE t ALTER COLUMN c TYPE {new}")
    after = conn.execute(query).fetchone()
    spelled = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 't'::regclass AND attname = 'c'"
    ).fetchone()
    assert before is not None and after is not None and spelled is not None
    return before != after, str(spelled[0])


def _spelled(conn: psycopg.Connection[tuple[object, ...]], type_sql: str) -> str:
    conn.execute("DROP TABLE IF EXISTS s")
    conn.execute(f"CREATE TABLE s (c {type_sql})")
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 's'::regclass AND attname = 'c'"
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{o}->{n}" for o, n in PAIRS])
def test_rewrites_as_the_server_does(db: str, old: str, new: str) -> None:
    answer = pgtypes.rewrites(old, new)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        old_spelled = _spelled(conn, old)
        new_spelled = _spelled(conn, new)
        if answer is not None:
            # Written as the plan writes it, or as the catalog spells it: one answer.
            assert pgtypes.rewrites(old_spelled, new_spelled) == answer
            assert pgtypes.rewrites(old_spelled, new) == answer
        rewritten, _ = _retype(conn, old, new)
        if answer is not None:
            assert answer == rewritten, f"{old} -> {new}: the server rewrote: {rewritten}"
            return
        # None: the answer depends on more than the two types. For timestamp <->
        # timestamptz the session's TimeZone decides; for user types the server's
        # catalog (a domain's constraints) does.
        if {"timestamp", "timestamptz"} <= {_bare(old_spelled), _bare(new_spelled)}:
            conn.execute("SET TimeZone = 'America/New_York'")
            elsewhere, _ = _retype(conn, old, new)
            assert (rewritten, elsewhere) == (False, True)
        else:
            assert {old_spelled, new_spelled} & {"short_text", "plain_text", "mood"}


def _bare(spelled: str) -> str:
    """The type's name without modifiers: timestamp(3) with time zone -> timestamptz."""
    parsed = pgtypes.parse_type(spelled)
    assert parsed is not None and parsed.names
    return str(parsed.names[-1].sval)


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{o}->{n}" for o, n in PAIRS])
def test_users_give_one_answer(db: str, old: str, new: str) -> None:
    """alter_column and verify follow the server where pgtypes knows, and take the safe
    way (a shadow column; a finding) where it does not."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        old_spelled = _spelled(conn, old)
        rewritten, new_spelled = _retype(conn, old, new)
        conn.execute("DROP TABLE t")
        conn.execute(f"CREATE TABLE t (c {old})")
    # Both users see the types as the catalog spells them.
    answer = pgtypes.rewrites(old_spelled, new_spelled)
    expected_in_place = answer is False
    if answer is not None:
        assert expected_in_place == (not rewritten)
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            conn.execute(text("SET TimeZone = 'UTC'"))
            ctx = Context(schema="public", release="r", catalog=Catalog(conn))
            op = AlterColumn(table="t", column="c", type=new)
            assert op.retypes_in_place(ctx) == expected_in_place
            # The lint's M016, reading the current type from the catalog.
            found = lint_sql(
                f"ALTER TABLE t ALTER COLUMN c TYPE {new}",
                catalog=Catalog(conn),
                assume_in_transaction=True,
            )
            # It judges the new type as written (public.mood is not known to be mood).
            seen = pgtypes.rewrites(old_spelled, new)
            assert seen in (answer, None)
            m016 = sorted(f.severity for f in found if f.rule == "M016")
            assert m016 == ([] if seen is False else ["warning"] if seen is None else ["error"])
            conn.rollback()
    finally:
        engine.dispose()
    assert retype_keeps_writes(old_spelled, new_spelled) == expected_in_place


def test_binary_casts_are_the_servers(db: str) -> None:
    """BINARY_CASTS is pg_cast's castmethod 'b' between built-in types."""
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT s.typname, t.typname FROM pg_cast c "
            "JOIN pg_type s ON s.oid = c.castsource JOIN pg_type t ON t.oid = c.casttarget "
            "WHERE c.castmethod = 'b' AND c.oid < 16384"
        ).fetchall()
    assert {(str(a), str(b)) for a, b in rows} == pgtypes.BINARY_CASTS


def test_serial_types_are_shorthand(db: str) -> None:
    """Each of SERIAL_TYPES makes an integer column owning a sequence; integer does not."""
    with psycopg.connect(db, autocommit=True) as conn:
        for name in [*sorted(pgtypes.SERIAL_TYPES), "integer"]:
            conn.execute("DROP TABLE IF EXISTS s")
            conn.execute(f"CREATE TABLE s (c {name})")
            row = conn.execute("SELECT pg_get_serial_sequence('s', 'c')").fetchone()
            assert row is not None
            assert (row[0] is not None) == pgtypes.is_serial(name), name
            assert pgtypes.is_serial(name.upper()) == pgtypes.is_serial(name)


# Functions that come with an extension rather than the core.
EXTENSION_FUNCTIONS = {
    "uuid_generate_v1": "uuid-ossp",
    "uuid_generate_v1mc": "uuid-ossp",
    "uuid_generate_v4": "uuid-ossp",
    "gen_random_bytes": "pgcrypto",
}
NEWER_FUNCTIONS = {"uuidv4": 180000, "uuidv7": 180000, "random_normal": 160000}


def _volatility(conn: psycopg.Connection[tuple[object, ...]], name: str) -> set[str]:
    rows = conn.execute("SELECT provolatile::text FROM pg_proc WHERE proname = %s", (name,))
    return {str(r[0]) for r in rows.fetchall()}


@pytest.mark.parametrize("name", sorted(pgtypes.VOLATILE_FUNCTIONS | pgtypes.NONVOLATILE_FUNCTIONS))
def test_volatility_is_pg_procs(db: str, server: Server, name: str) -> None:
    """is_volatile_function agrees with pg_proc.provolatile (every overload)."""
    with psycopg.connect(db, autocommit=True) as conn:
        extension = EXTENSION_FUNCTIONS.get(name)
        if extension is not None:
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = %s", (extension,)
            ).fetchone()
            if available is None:
                # PostgreSQL 18 embedded has no uuid-ossp or pgcrypto; 15 from Debian has.
                assert server.version >= 180000, f"{extension} is missing on {server.version}"
                return
            conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{extension}"')
        kinds = _volatility(conn, name)
    if server.version < NEWER_FUNCTIONS.get(name, 0):
        assert not kinds
        return
    assert kinds, f"{name} is no function on {server.version}"
    if pgtypes.is_volatile_function(name):
        assert kinds == {"v"}
    else:
        assert pgtypes.is_volatile_function(name) is False
        assert "v" not in kinds


def test_unknown_function_and_qualified_names() -> None:
    assert pgtypes.is_volatile_function("my_func") is None
    assert pgtypes.is_volatile_function("pg_catalog.random") is True
    assert pgtypes.is_volatile_function("NOW") is False


def test_unparsable_types_are_unknown() -> None:
    assert pgtypes.rewrites("varchar(", "text") is None
    assert pgtypes.rewrites("text", "text; DROP TABLE t") is None
