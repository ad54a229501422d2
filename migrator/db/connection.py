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
        raise UsageError(f"not a database URL: {redact(url)}") from None
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    raise UsageError(f"migrator works with PostgreSQL only, not {parsed.drivername!r}")


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


def describe_db_error(exc: BaseException, url: str | URL | None = None) -> str:
    """One line for a database error: SQLSTATE, the server's message, no password."""
    orig: Any = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, psycopg.Error):
        diag = orig.diag
        primary = diag.message_primary or str(orig).strip().splitlines()[-1]
        state = f" [{diag.sqlstate}]" if diag.sqlstate else ""
        detail = f" ({diag.message_detail})" if diag.message_detail else ""
        return scrub(f"{primary}{detail}{state}", url)
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
