"""Engines and connections, and the redaction of passwords.

Every URL or libpq conninfo string migrator is given passes `normalise_url`, which
remembers the passwords in it (`remember_secrets`): in the userinfo, in the query
string (``?password=``, ``sslpassword=``) or in keyword form (``password=...``), and
also in strings that do not parse. `scrub_secrets` removes every remembered password
from a text; the CLI runs everything it writes through it, and the state store
everything it records, so a password reaches no output and no audit row.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Connection, Engine, create_engine, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from migrator.errors import DatabaseError, UsageError

APPLICATION_NAME = "migrator"


MASK = "***"
_SECRET_KEYS = ("password", "sslpassword")
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
# ``password=...`` in keyword form or in a query string: quoted ('a b\'c') or bare.
_KEYWORD = re.compile(r"(?:^|[\s?&;])(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&#;]*)")


def _userinfo_secrets(value: str) -> set[str]:
    """What stands after ``user:`` before an ``@``, in anything URL-like, parseable or
    not (``postgresql//u:pw@h/d``, ``u:pw@h``): cut at the last ``//`` and at the last
    ``/`` or blank before the ``@``, since a password may hold a bare ``/``."""
    found: set[str] = set()
    for at in (m.start() for m in re.finditer("@", value)):
        head = value[:at]
        head = head[max(head.rfind(" "), head.rfind("\t"), head.rfind("\n")) + 1 :]
        for cut in (head.rfind("//") + 2 if "//" in head else 0, head.rfind("/") + 1):
            userinfo = head[cut:]
            if ":" in userinfo:
                found.add(userinfo.split(":", 1)[1])
    return found


def _variants(secret: str) -> set[str]:
    """A password as it may be written: itself, percent-encoded or -decoded, and
    escaped as JSON and Python write strings."""
    out = {secret, unquote(secret), quote(secret, safe=""), quote_plus(secret)}
    out |= {json.dumps(v)[1:-1] for v in list(out)} | {repr(v)[1:-1] for v in list(out)}
    return {v for v in out if v}


def secrets_in(value: str) -> set[str]:
    """The passwords a URL or conninfo string holds, however it is spelled."""
    found = _userinfo_secrets(value)
    for match in _KEYWORD.finditer(value):
        raw = match.group(1)
        if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
            found.add(raw)
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        found.add(raw)
    try:
        parsed = make_url(value)
    except ArgumentError:
        pass
    else:
        if parsed.password:
            found.add(str(parsed.password))
        for key in _SECRET_KEYS:
            query = parsed.query.get(key)
            for item in (query,) if isinstance(query, str) else query or ():
                found.add(item)
    if "=" in value and "://" not in value:
        try:
            info = conninfo_to_dict(value)
        except psycopg.Error:
            pass
        else:
            found |= {str(info[key]) for key in _SECRET_KEYS if info.get(key)}
    return {variant for secret in found if secret for variant in _variants(secret)}


def remember_secrets(value: str) -> None:
    """Remember the passwords ``value`` holds, so `scrub_secrets` removes them anywhere."""
    found = secrets_in(value)
    with _SECRETS_LOCK:
        _SECRETS.update(found)


def scrub_secrets(message: str) -> str:
    """``message`` with every remembered password replaced by ***."""
    with _SECRETS_LOCK:
        known = sorted(_SECRETS, key=len, reverse=True)
    for secret in known:
        if secret in message:
            message = message.replace(secret, MASK)
    return message


def scrub_value(value: Any) -> Any:
    """`scrub_secrets` through the strings of JSON-like data (for audit records)."""
    if isinstance(value, str):
        return scrub_secrets(value)
    if isinstance(value, dict):
        return {scrub_value(k): scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(v) for v in value]
    return value


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
