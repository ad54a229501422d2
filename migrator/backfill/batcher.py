"""Keyset batches over the primary key, each its own short transaction.

Only rows that still need filling are touched (the spec's ``needs`` condition), so a
value the new version already wrote is never overwritten. After every batch the last
key and the running count are checkpointed, so a rerun resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from migrator.db.connection import connect
from migrator.engine.catalog import Catalog
from migrator.errors import ValidationFailed
from migrator.observer import NULL_OBSERVER, Observer
from migrator.ops.base import BackfillSpec
from migrator.sqltext import ident, literal

Checkpoint = dict[str, Any]
SaveCheckpoint = Callable[[Connection, Checkpoint], None]


@dataclass
class BatchResult:
    """What one batch did."""

    updated: int
    last_key: list[Any] | None
    seconds: float


def _batch_sql(spec: BackfillSpec, keys: list[str], last: list[Any] | None, size: int) -> str:
    table = ident(spec.schema, spec.table)
    key_list = ", ".join(ident(k) for k in keys)
    aliases = [f"_k{i}" for i in range(len(keys))]
    select_keys = ", ".join(f"{ident(k)} AS {a}" for k, a in zip(keys, aliases, strict=True))
    after = ""
    if last is not None:
        after = f"WHERE ({key_list}) > ({', '.join(literal(v) for v in last)}) "
    sets = ", ".join(f"{ident(col)} = ({expr})" for col, expr in spec.set.items())
    match = " AND ".join(f"t.{ident(k)} = batch.{a}" for k, a in zip(keys, aliases, strict=True))
    desc = ", ".join(f"{a} DESC" for a in aliases)
    return (
        f"WITH batch AS (SELECT {select_keys} FROM {table} {after}"
        f"ORDER BY {key_list} LIMIT {int(size)}), "
        f"done AS (UPDATE {table} AS t SET {sets} FROM batch WHERE {match} "
        f"AND ({spec.needs}) RETURNING 1) "
        f"SELECT (SELECT count(*) FROM done), {', '.join(aliases)} "
        f"FROM (SELECT * FROM batch ORDER BY {desc} LIMIT 1) AS last"
    )


def run_batch(
    conn: Connection, spec: BackfillSpec, keys: list[str], last: list[Any] | None, size: int
) -> BatchResult:
    """One batch in the caller's transaction."""
    started = time.perf_counter()
    cursor = conn.connection.cursor()
    cursor.execute(_batch_sql(spec, keys, last, size))
    row = cursor.fetchone()
    elapsed = time.perf_counter() - started
    if row is None:
        return BatchResult(0, None, elapsed)
    return BatchResult(int(row[0]), list(row[1:]), elapsed)


def key_columns(conn: Connection, spec: BackfillSpec) -> list[str]:
    """The columns batches walk: the primary key."""
    keys = Catalog(conn).primary_key(spec.schema, spec.table)
    if not keys:
        raise ValidationFailed(
            f"backfill of {spec.schema}.{spec.table}: the table has no primary key to batch by"
        )
    return keys


def backfill(
    engine: Engine,
    spec: BackfillSpec,
    *,
    name: str,
    checkpoint: Checkpoint | None,
    save: SaveCheckpoint,
    batch_size: int = 1000,
    pause: float = 0.0,
    lock_timeout: float = 1.0,
    observer: Observer = NULL_OBSERVER,
) -> Checkpoint:
    """Fill every row that needs it, resuming from ``checkpoint``; return the final one."""
    state: Checkpoint = dict(checkpoint or {"last_key": None, "rows": 0, "batches": 0})
    with connect(engine) as conn:
        keys = key_columns(conn, spec)
        conn.commit()
        while True:
            with conn.begin():
                conn.connection.cursor().execute(
                    f"SET LOCAL lock_timeout = {literal(f'{round(lock_timeout * 1000)}ms')}"
                )
                result = run_batch(conn, spec, keys, state["last_key"], batch_size)
                if result.last_key is None:
                    break
                state = {
                    "last_key": result.last_key,
                    "rows": state["rows"] + result.updated,
                    "batches": state["batches"] + 1,
                }
                save(conn, state)
            observer.progress(name, state["rows"], None, batches=state["batches"])
            if pause:
                time.sleep(pause)
    return state
