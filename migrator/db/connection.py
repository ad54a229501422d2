"""Engines and connections. A password never leaves this module in any message."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from migrator.errors import DatabaseError, UsageError

APPLICATION_NAME = "migrator"


def normalise_url(url: str) -> URL:
    """A SQLAlchemy URL for psycopg 3 from ``postgres://``, ``postgresql://`` or a full URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"not a database URL: {redact(url)}") from None
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    raise UsageError(f"migrator works with PostgreSQL only, not {parsed.drivername!r}")


def redact(url: str | URL) -> str:
    """The URL with its password replaced by ***."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
        if parsed.drivername.startswith("postgresql"):
            parsed = parsed.set(drivername="postgresql")  # as users write it
        return parsed.render_as_string(hide_password=True)
    except ArgumentError:
        assert isinstance(url, str)
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def scrub(message: str, url: str | URL | None) -> str:
    """A message with the URL's password removed wherever it appears."""
    if url is None:
        return message
    password = (url if isinstance(url, URL) else _safe_url(url)).password
    if password:
        message = message.replace(str(password), "***")
    return message


def _safe_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        return URL.create("postgresql")


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
