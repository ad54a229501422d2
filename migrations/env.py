"""Alembic environment for the revisions `migrator render` writes.

The URL comes from `alembic -x url=...` or MIGRATOR_DATABASE_URL (postgresql:// URLs are
given the psycopg 3 driver). Each revision runs in its own transaction; statements that
PostgreSQL refuses inside one (CREATE INDEX CONCURRENTLY) run in autocommit blocks.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "MIGRATOR_DATABASE_URL"
    )
    if not url:
        raise SystemExit("set MIGRATOR_DATABASE_URL or pass -x url=postgresql://...")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def run_migrations_offline() -> None:
    """--sql: write the statements out instead of running them."""
    context.configure(url=_url(), literal_binds=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the revisions against the database."""
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
