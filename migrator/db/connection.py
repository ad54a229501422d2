"""Engines and connections, and the redaction of passwords.

Every URL or libpq conninfo string migrator is given passes `normalise_url`, which
remembers the passwords in it (`remember_secrets`): in the userinfo, in the query
string (``?password=``, ``sslpassword=``) or in keyword form (``password=...``), and
also in strings that do not parse. `scrub_secrets` removes every remembered password
from a text; the CLI runs everything it writes through it, and the state store
everything it records, so a password reaches no output and no audit row. Those two
live in secrets.py, which the CLI imports at start-up without SQLAlchemy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Connection, Engine, create_engine, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from migrator.db.secrets import remember_secrets as remember_secrets
from migrator.db.secrets import scrub_secrets as scrub_secrets
from migrator.db.secrets import scrub_value as scrub_value
from migrator.db.secrets import secrets_in as secrets_in
from migrator.errors import DatabaseError, UsageError

APPLICATION_NAME = "migrator"


def normalise_url(url: str) -> URL:
    """A SQLAlchemy URL for psycopg 3 from ``postgres://``, ``postgresql://``, a full URL
    or a libpq keyword string (``host=... dbname=...``)."""
    remember_secrets(url)
    if "://" not in url and "=" in url:
        return _from_keywords(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(
            f"not a database URL: {redact(url)}; expected postgresql://USER@HOST:PORT/DBNAME "
            "or host=HOST dbname=DBNAME (docs/connecting.md)"
        ) from None
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    raise UsageError(f"migrator works with PostgreSQL only, not {parsed.drivername!r}")


def libpq_url(url: str, database: str | None = None) -> str:
    """A ``postgresql://`` URL libpq programs and psycopg take (optionally another database)."""
    parsed = normalise_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _from_keywords(conninfo: str) -> URL:
    try:
        info = {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    except psycopg.Error:
        raise UsageError(f"not a database URL or conninfo string: {redact(conninfo)}") from None
    # A socket folder (and its port) stays in the query (``?host=/run/postgresql``).
    tcp = not str(info.get("host", "/")).startswith("/")
    host = info.pop("host") if tcp else None
    port = info.pop("port", None) if tcp else None
    try:
        return URL.create(
            "postgresql+psycopg",
            username=info.pop("user", None),
            password=info.pop("password", None),
            host=host,
            port=int(port) if port else None,
            database=info.pop("dbname", None),
            query=info,
        )
    except ValueError:
        raise UsageError(f"not a database URL or conninfo string: {redact(conninfo)}") from None


def redact(url: str | URL) -> str:
    """The URL (or conninfo string) with its passwords replaced by ***."""
    if isinstance(url, URL):
        if url.drivername.startswith("postgresql"):
            url = url.set(drivername="postgresql")  # as users write it
        remember_secrets(url.render_as_string(hide_password=False))
        return scrub_secrets(url.render_as_string(hide_password=True))
    remember_secrets(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        return scrub_secrets(url)
    return redact(parsed)


def scrub(message: str, url: str | URL | None) -> str:
    """A message with the URL's passwords, and every remembered one, removed."""
    if url is not None:
        remember_secrets(url if isinstance(url, str) else url.render_as_string(False))
    return scrub_secrets(message)


def make_engine(url: str, *, application_name: str = APPLICATION_NAME) -> Engine:
    """An engine on psycopg 3; connections name themselves in pg_stat_activity."""
    parsed = normalise_url(url)
    return create_engine(
        parsed,
        connect_args={"application_name": application_name, "connect_timeout": 10},
        pool_pre_ping=False,
        pool_size=4,
        max_overflow=8,
    )


STATEMENT_NOTE = "migrator statement: "
INSUFFICIENT_PRIVILEGE = "42501"
_DENIED = re.compile(r"permission denied for (\w+(?: \w+)?) (.+)$")
_OWNER = re.compile(r"must be owner of (\w+(?: \w+)?) (.+)$")
_VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def note_statement(exc: BaseException, sql: str) -> None:
    """Keep the statement that failed with its error, for `describe_db_error`."""
    exc.add_note(STATEMENT_NOTE + sql)


def _statement_of(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.statement:
        return str(exc.statement)
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith(STATEMENT_NOTE):
            return note[len(STATEMENT_NOTE) :]
    return ""


def privilege_needed(message: str, detail: str | None, statement: str) -> str | None:
    """The privilege a ``permission denied`` (42501) asks for, as a GRANT would name it.

    The server names the object, not the privilege; the statement's first words tell
    which (no parsing: CREATE needs CREATE, UPDATE needs UPDATE, ...)."""
    words = statement.split()
    verb = words[0].upper() if words else ""
    owner = _OWNER.search(message)
    if owner:
        return f"ownership of {owner.group(1)} {owner.group(2)}"
    denied = _DENIED.search(message)
    if not denied:
        return None
    kind, name = denied.group(1).upper(), denied.group(2)
    if kind == "DATABASE":
        wanted = "CONNECT" if "CONNECT" in (detail or "") or not verb else "CREATE"
        if verb == "CREATE" and len(words) > 1 and words[1].upper() != "SCHEMA":
            wanted = "CONNECT"
        return f"{wanted} ON DATABASE {name}"
    if kind == "SCHEMA":
        return f"{'CREATE' if verb == 'CREATE' else 'USAGE'} ON SCHEMA {name}"
    if kind in ("TABLE", "VIEW", "MATERIALIZED VIEW", "RELATION"):
        privilege = verb if verb in _VERBS else "SELECT"
        if verb == "LOCK" and "ACCESS SHARE" not in statement.upper():
            # Above ACCESS SHARE: any one of these (or MAINTAIN, 17+).
            privilege = "UPDATE (or DELETE, TRUNCATE)"
        if verb == "CREATE" and "TRIGGER" in statement.upper()[:40]:
            privilege = "TRIGGER"
        return f"{privilege} ON TABLE {name}"
    if kind == "SEQUENCE":
        return f"USAGE ON SEQUENCE {name}"
    if kind == "FUNCTION":
        return f"EXECUTE ON FUNCTION {name}"
    return None


def describe_db_error(exc: BaseException, url: str | URL | None = None) -> str:
    """One line for a database error: SQLSTATE, the server's message, no password; for
    a missing privilege, the privilege (docs/privileges.md has the GRANTs)."""
    orig: Any = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, psycopg.Error):
        diag = orig.diag
        # A client-side error (a dropped connection) has no server message: its text is
        # several lines, the first saying what happened ("server closed the connection").
        primary = diag.message_primary or " ".join(str(orig).split())
        state = f" [{diag.sqlstate}]" if diag.sqlstate else ""
        detail = f" ({diag.message_detail})" if diag.message_detail else ""
        needed = ""
        if diag.sqlstate == INSUFFICIENT_PRIVILEGE:
            statement = _statement_of(exc) or _statement_of(orig)
            privilege = privilege_needed(primary, diag.message_detail, statement)
            if privilege:
                needed = f": the role needs {privilege} (see docs/privileges.md)"
        return scrub(f"{primary}{detail}{state}{needed}", url)
    text = str(orig).strip().splitlines()
    return scrub(text[0] if text else type(orig).__name__, url)


def connect_error(exc: BaseException, engine: Engine) -> DatabaseError:
    """A DatabaseError for a connection that could not be made."""
    orig: Any = exc.orig if isinstance(exc, DBAPIError) else exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    reason = scrub("; ".join(lines) or type(orig).__name__, engine.url)
    return DatabaseError(f"cannot connect to {redact(engine.url)}: {reason}")


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """A connection, with connection failures turned into one clear DatabaseError."""
    try:
        conn = engine.connect()
    except (OperationalError, psycopg.OperationalError) as exc:
        raise connect_error(exc, engine) from None
    with conn:
        yield conn


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, if it has one."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, psycopg.Error):
        return orig.diag.sqlstate
    return None
