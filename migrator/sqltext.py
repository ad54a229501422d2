"""SQL text helpers. Identifiers and values are quoted by the libraries, never by hand.

Identifiers go through SQLAlchemy's PostgreSQL identifier preparer (it quotes only when
needed, so dry-run output stays readable); values through psycopg's literal adapter.
Expressions written in a plan are SQL by design and are passed through unchanged.
"""

from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.sql.compiler import IdentifierPreparer
    from sqlalchemy.sql.elements import TextClause

MAX_IDENTIFIER = 63


@functools.cache
def _preparer() -> IdentifierPreparer:
    # Imported on first use: loading a plan (`migrator plan validate`) needs no SQLAlchemy.
    from sqlalchemy.dialects import postgresql

    return postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]


def ident(*parts: str) -> str:
    """A quoted, dot-joined name: ``ident("public", "users")`` -> ``public.users``."""
    preparer = _preparer()
    return ".".join(preparer.quote(part) for part in parts)


def text(sql: str) -> TextClause:
    """``sqlalchemy.text(sql)``, imported on first use: modules that ask the catalog
    (engine/catalog.py, the lint's questions) import without SQLAlchemy, for the lint
    of a file and `plan validate`, which never connect."""
    from sqlalchemy import text as sqlalchemy_text

    return sqlalchemy_text(sql)


def raw(sql: str) -> TextClause:
    """``text(sql)`` for a statement that takes no bind parameters, run as written.

    Plan SQL (an `up`, a default, a check, a bound) is pasted into such statements, and
    SQLAlchemy reads ``:word`` after a non-word character as a parameter: the JSON
    literal ``'{"k":2}'`` became ``'{"k"%(2)s}'``. Every colon is escaped here, which
    SQLAlchemy turns back into the colon it was.
    """
    return text(colons_escaped(sql))


def colons_escaped(sql: str) -> str:
    """SQL text with every colon escaped for ``sqlalchemy.text``: plan SQL pasted into a
    statement that binds parameters of its own (``:n``), or into a ``text()`` clause
    that is compiled to a string later (`plan import sql`'s defaults and checks)."""
    return sql.replace(":", "\\:")


def literal(value: object) -> str:
    """A value as an SQL literal, quoted by psycopg."""
    from psycopg import sql as psql

    return psql.Literal(value).as_string()


def schema_first_sql(schema: str, *, local: bool) -> str | None:
    """The statement that puts ``schema`` first on the session's search_path, before
    what the role has (extensions' schemas stay reachable), so names a plan writes bare
    (a type in a column spec, a function in an ``up``) resolve in the plan's schema.
    None for ``public``, which the default search_path has already."""
    if schema == "public":
        return None
    return (
        f"SELECT set_config('search_path', {literal(ident(schema))} || ', ' || "
        f"current_setting('search_path'), {'true' if local else 'false'})"
    )


def short_name(*parts: str, prefix: str = "", limit: int = MAX_IDENTIFIER) -> str:
    """A readable name for an object migrator creates, kept under PostgreSQL's 63 bytes.

    When the plain name is too long it is cut and a short hash of the whole is appended,
    so two long names never collide.
    """
    plain = prefix + "_".join(parts)
    if len(plain.encode()) <= limit:
        return plain
    digest = hashlib.sha256(plain.encode()).hexdigest()[:8]
    return plain.encode()[: limit - 9].decode(errors="ignore") + "_" + digest


def dollar_quoted(body: str, tag: str = "migrator") -> str:
    """``body`` between dollar quotes (a function's or a DO block's), with a tag it does
    not hold: a name or value written in it may hold ``$migrator$``, which would end
    the quotes there and run the rest as SQL."""
    chosen, n = tag, 0
    while f"${chosen}" in body:
        n += 1
        chosen = f"{tag}{n}"
    return f"${chosen}${body}${chosen}$"


def private_function_sql(function: str) -> str:
    """Take back the EXECUTE every new function gives PUBLIC, for a function migrator
    makes in its schema (``function`` quoted, without its arguments): the schema is
    usable by PUBLIC for `migrator.release_phase`, and ``ALTER DEFAULT PRIVILEGES ...
    IN SCHEMA`` cannot revoke PostgreSQL's built-in default, so each one is revoked."""
    return f"REVOKE EXECUTE ON FUNCTION {function}() FROM PUBLIC"
