"""How often the server ran a function: track_functions, counted per session."""

from __future__ import annotations

import psycopg


def calls(url: str, schema: str, function: str, *statements: str) -> int:
    """Run ``statements`` in one session that counts function calls, then return how
    many calls of ``schema.function`` the server has counted in all (the session's
    counts are flushed before it ends; read from a new session, not a cached snapshot)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET track_functions = 'all'")
        for statement in statements:
            conn.execute(statement.encode())
        conn.execute("SELECT pg_stat_force_next_flush()")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions "
            "WHERE schemaname = %s AND funcname = %s",
            (schema, function),
        ).fetchone()
    assert row is not None
    return int(row[0])
