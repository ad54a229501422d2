"""Benchmark: the last statement of a constraint added partition by partition, against
the same constraint added to the partitioned table at once.

    python bench/partitions.py                 # 1,000,000 rows, PostgreSQL 18 and 15
    python bench/partitions.py --rows 100000

A table of --rows rows in two range partitions. For UNIQUE: add_unique's route (each
leaf's unique index built concurrently and made its constraint USING INDEX, then ADD
CONSTRAINT ... UNIQUE on the table, which adopts them) against ADD CONSTRAINT ... UNIQUE
on the bare table (it builds every index under its locks). For FOREIGN KEY (PostgreSQL
15 to 17's route): NOT VALID and VALIDATE on each leaf, then ADD CONSTRAINT ... FOREIGN
KEY on the table, which attaches them, against the same ADD on the bare table (it scans
every partition). Each line: the statement's time and the locks it held on the tables
(pg_locks, read inside its transaction). PostgreSQL 15 is Debian's, where installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.servers import Debian15Server, EmbeddedServer, Server

SETUP = """
DROP TABLE IF EXISTS ev; DROP TABLE IF EXISTS us;
CREATE TABLE us (id bigint PRIMARY KEY);
INSERT INTO us SELECT generate_series(1, 1000);
CREATE TABLE ev (id bigint NOT NULL, at date NOT NULL, u bigint) PARTITION BY RANGE (at);
CREATE TABLE ev_24 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE ev_25 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO ev SELECT g, DATE '2024-01-01' + (g % 700), 1 + g % 1000
FROM generate_series(1, {rows}) g;
"""
LEAVES = ("ev_24", "ev_25")
UNIQUE = "ALTER TABLE ev ADD CONSTRAINT ev_u UNIQUE (id, at)"
FOREIGN = "ALTER TABLE ev ADD CONSTRAINT ev_f FOREIGN KEY (u) REFERENCES us (id)"


def unique_leaves(conn: psycopg.Connection) -> None:
    for leaf in LEAVES:
        conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {leaf}_u ON {leaf} (id, at)")
        conn.execute(f"ALTER TABLE {leaf} ADD CONSTRAINT {leaf}_u UNIQUE USING INDEX {leaf}_u")


def foreign_leaves(conn: psycopg.Connection) -> None:
    for leaf in LEAVES:
        conn.execute(
            f"ALTER TABLE {leaf} ADD CONSTRAINT ev_f FOREIGN KEY (u) REFERENCES us (id) NOT VALID"
        )
        conn.execute(f"ALTER TABLE {leaf} VALIDATE CONSTRAINT ev_f")


def measure(
    url: str, rows: int, first: Callable[[psycopg.Connection], None] | None, last: str
) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SETUP.format(rows=rows))
        conn.execute("VACUUM ANALYZE ev")
        if first is not None:
            first(conn)
        conn.execute("BEGIN")
        start = time.perf_counter()
        conn.execute(last)
        ms = (time.perf_counter() - start) * 1000
        locks = conn.execute(
            "SELECT c.relname || ' ' || l.mode FROM pg_locks l JOIN pg_class c "
            "ON c.oid = l.relation WHERE l.pid = pg_backend_pid() AND c.relkind IN ('r', 'p') "
            "AND c.relname IN ('ev', 'ev_24', 'ev_25', 'us') ORDER BY 1"
        ).fetchall()
        conn.execute("COMMIT")
    return f"{ms:9.1f} ms  {', '.join(r[0] for r in locks)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    servers: list[Server] = [EmbeddedServer()]
    if Debian15Server.unavailable() is None:
        servers.append(Debian15Server())
    try:
        for server in servers:
            url = server.create_database("bench")
            version = psycopg.connect(url).execute("SHOW server_version").fetchone()
            print(f"PostgreSQL {version[0] if version else '?'}, {args.rows} rows in 2 partitions")
            print(
                f"  UNIQUE, adopting the leaves':   {measure(url, args.rows, unique_leaves, UNIQUE)}"
            )
            print(f"  UNIQUE, at once (builds):       {measure(url, args.rows, None, UNIQUE)}")
            print(
                f"  FOREIGN KEY, attaching leaves': {measure(url, args.rows, foreign_leaves, FOREIGN)}"
            )
            print(f"  FOREIGN KEY, at once (scans):   {measure(url, args.rows, None, FOREIGN)}")
            server.drop_database(url)
    finally:
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
