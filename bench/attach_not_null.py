"""Benchmark: attach_partition of a table whose column the parent has NOT NULL.

    python bench/attach_not_null.py                 # 200,000 rows, PostgreSQL 18 and 15
    python bench/attach_not_null.py --rows 50000

ATTACH PARTITION refuses a nullable column the parent has NOT NULL, and a plain SET NOT
NULL scans the table under ACCESS EXCLUSIVE. migrator's expand (CHECK NOT VALID,
VALIDATE, SET NOT NULL trusting the CHECK; the bound's CHECK the same way, then the
ATTACH) is run for real and each step timed; then, on a fresh copy of the same table,
the plain statements (SET NOT NULL, ATTACH without a CHECK) are timed, each with
pg_stat_user_tables.seq_scan of the table before and after it (read once the session
that ran it is gone, so its statistics are flushed). PostgreSQL 15 is Debian's, where
installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._workload import StepTimes
from migrator import commands
from migrator.plan.loader import parse_plan
from tests.support.servers import Debian15Server, EmbeddedServer, Server

SETUP = """
CREATE TABLE ev (id bigint NOT NULL, at date NOT NULL, payload text NOT NULL)
    PARTITION BY RANGE (at);
CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE ev_2026 (id bigint NOT NULL, at date NOT NULL, payload text);
INSERT INTO ev_2026 SELECT g, DATE '2026-01-01' + (g % 365), 'p' || g
FROM generate_series(1, {rows}) g;
"""
PLAN = """release: bench-attach
database: {lock_timeout: 5s, retries: 2}
expand:
  - attach_partition:
      table: ev
      partition: ev_2026
      bound: "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
"""
BOUND = "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"


def seq_scans(url: str) -> int:
    """ev_2026's seq_scan once no other session of the database is left."""
    with psycopg.connect(url, autocommit=True) as conn:
        others = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        while conn.execute(others).fetchone() != (0,):
            time.sleep(0.05)
        row = conn.execute(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'ev_2026'"
        ).fetchone()
        assert row is not None
        return int(row[0])


def timed(url: str, sql: str) -> tuple[float, int]:
    """One statement in its own session: its time, and the seq scans of ev_2026 it made."""
    before = seq_scans(url)
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(sql)
        took = time.perf_counter() - started
    return took, seq_scans(url) - before


def run(server: Server, rows: int) -> None:
    version = ""
    url = server.create_database("bench_attach")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            conn.execute(SETUP.format(rows=rows))
            conn.execute("VACUUM ANALYZE ev_2026")
        print(f"PostgreSQL {version}, {rows:,} rows in ev_2026")
        steps = StepTimes()
        before = seq_scans(url)
        commands.expand(parse_plan(PLAN), commands.Options(database_url=url, observer=steps))
        steps.close()
        print(f"  migrator expand: {seq_scans(url) - before} seq scans of ev_2026 in all")
        for s in steps.steps:
            print(f"    {s.seconds * 1000:9.1f} ms  {s.name}")
    finally:
        server.drop_database(url)
    url = server.create_database("bench_attach")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SETUP.format(rows=rows))
            conn.execute("VACUUM ANALYZE ev_2026")
        print("  plain statements (ACCESS EXCLUSIVE on ev_2026 throughout):")
        for sql in (
            "ALTER TABLE ev_2026 ALTER COLUMN payload SET NOT NULL",
            f"ALTER TABLE ev ATTACH PARTITION ev_2026 {BOUND}",
        ):
            took, scans = timed(url, sql)
            print(f"    {took * 1000:9.1f} ms  {scans} seq scan(s)  {sql}")
    finally:
        server.drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    servers: list[Server] = [EmbeddedServer()]
    if not Debian15Server.unavailable():
        servers.append(Debian15Server())
    try:
        for server in servers:
            run(server, args.rows)
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
