"""Passwords remembered and scrubbed: no password migrator was given reaches an output.

`remember_secrets` takes the passwords out of a URL or libpq conninfo string (in the
userinfo, in the query string, in keyword form, also in strings that do not parse);
`scrub_secrets` removes every remembered one from a text. A password of `BARE_MIN`
characters or more is masked wherever it stands; a shorter one only where it stands as a
password (``user:pw@``, ``password=pw``, ``"password": "pw"``), since masking every "a"
of a text would make it unreadable and show the password all the same. Kept apart from
connection.py so the CLI's output scrubber imports neither SQLAlchemy nor psycopg at
start-up.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
# Below this length a password is masked only where it stands as a password.
BARE_MIN = 4
_SECRET_KEYS = ("password", "sslpassword")
_SECRETS: set[str] = set()  # spellings of the passwords of BARE_MIN characters or more
_SHORT: set[str] = set()  # spellings of the shorter ones
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
    return {variant for secret in _passwords_in(value) for variant in _variants(secret)}


def _passwords_in(value: str) -> set[str]:
    """The passwords a URL or conninfo string holds, as written there."""
    found = _userinfo_secrets(value)
    for match in _KEYWORD.finditer(value):
        raw = match.group(1)
        if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
            found.add(raw)
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        found.add(raw)
    if not value.strip():  # no variable set, no option given: nothing to parse
        return set()
    # Imported here: the CLI remembers the URLs it is given before any verb runs, and
    # `migrator --help` or `plan validate` need neither library otherwise.
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

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
    return {secret for secret in found if secret}


def remember_secrets(value: str) -> None:
    """Remember the passwords ``value`` holds, so `scrub_secrets` removes them anywhere."""
    found = _passwords_in(value)
    # The length of the password as given decides, not of a spelling: "@" is short
    # however it is escaped ("%40").
    long = {v for s in found if len(unquote(s)) >= BARE_MIN for v in _variants(s)}
    short = {v for s in found if len(unquote(s)) < BARE_MIN for v in _variants(s)}
    with _SECRETS_LOCK:
        _SECRETS.update(long)
        _SHORT.update(short - long)


# A short password where it stands as one: between ``user:`` and ``@``, or as the value of
# a password key of a conninfo string, a query string, JSON or YAML, quoted or not, up to
# the end of the text, a blank, a separator or a quote.
_KEY = r"""(?:ssl)?password["']?\s*[:=]\s*["']?"""
_AFTER = r"""(?=$|[\s&#;,'"\\)\]}>])"""


def _in_place(secret: str) -> re.Pattern[str]:
    """``secret`` where it stands as a password; group 1 is what precedes it."""
    s = re.escape(secret)
    return re.compile(rf"(?:(:)(?={s}@)|({_KEY})(?={s}{_AFTER})){s}", re.IGNORECASE)


def scrub_secrets(message: str) -> str:
    """``message`` with every remembered password replaced by ***."""
    with _SECRETS_LOCK:
        known = sorted(_SECRETS, key=len, reverse=True)
        short = sorted(_SHORT, key=len, reverse=True)
    for secret in known:
        if secret in message:
            message = message.replace(secret, MASK)
    for secret in short:
        if secret in message:
            message = _in_place(secret).sub(lambda m: (m.group(1) or m.group(2)) + MASK, message)
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
