"""What `migrator check --database-url` risks and spends when a live table is locked.

On an embedded server holding pagila's schema (tests/corpus/pagila-schema.sql), in one
run: check's schema-only pg_dump (`scratch.dump_schema`) timed on the free database; then
with another session holding ACCESS EXCLUSIVE on one table (``--table``), a dump given
lock_timeout 1s timed to its refusal (exit 5), and, while it waits (seen on pg_locks),
how many of the schema's tables it already holds ACCESS SHARE on. docs/check.md cites
these for why check does not retry the dump.

    .venv/bin/python bench/dump_lock.py [--runs 5] [--table store]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

from migrator.db.embedded import start
from migrator.errors import LockNotAcquired
from migrator.verify.scratch import ScratchServer, dump_schema, load_sql

PAGILA = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "pagila-schema.sql"

_HELD = (
    "SELECT count(*) FILTER (WHERE l.granted AND c.relnamespace = 'public'::regnamespace "
    "  AND c.relkind IN ('r', 'p')), count(*) FILTER (WHERE NOT l.granted) "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "LEFT JOIN pg_class c ON c.oid = l.relation "
    "WHERE a.application_name = 'pg_dump' AND l.locktype = 'relation' "
    "AND l.mode = 'AccessShareLock'"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--table", default="store")
    args = parser.parse_args()
    server = start()
    try:
        scratch = ScratchServer(server.url)
        url = scratch.create("bench_dump_lock")
        load_sql(url, PAGILA)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "dump.sql"
            took = []
            for _ in range(args.runs):
                began = time.perf_counter()
                dump_schema(url, out, 1.0)
                took.append(time.perf_counter() - began)
            print(
                f"schema-only dump, free: median {statistics.median(took):.2f} s "
                f"({', '.join(f'{t:.2f}' for t in took)})"
            )
            with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as w:
                holder.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                        sql.Identifier(args.table)
                    )
                )
                held: list[int] = []
                stop = threading.Event()

                def watch() -> None:
                    # Polls pg_locks until pg_dump's ungranted lock shows: the event.
                    while not held and not stop.is_set():
                        row = w.execute(_HELD).fetchone()
                        if row is not None and row[1]:
                            held.append(int(row[0]))

                watcher = threading.Thread(target=watch)
                watcher.start()
                began = time.perf_counter()
                try:
                    dump_schema(url, out, 1.0)
                except LockNotAcquired:
                    refused = time.perf_counter() - began
                else:
                    raise SystemExit("the dump was not refused")
                finally:
                    stop.set()
                    watcher.join()
                    holder.rollback()
            tables = table_count(url)
            print(
                f"schema-only dump, {args.table} held, lock_timeout 1s: refused in {refused:.2f} s"
            )
            print(
                f"tables it held ACCESS SHARE on while it waited: {held[0] if held else 'not seen'} of {tables}"
            )
    finally:
        server.stop()


def table_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p') "
            "AND relnamespace = 'public'::regnamespace"
        ).fetchone()
    return int(row[0]) if row else 0


if __name__ == "__main__":
    main()
