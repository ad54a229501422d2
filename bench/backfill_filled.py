"""Benchmark: `migrator backfill` on a table where no row needs filling.

    python bench/backfill_filled.py                 # 1,000,000 rows, embedded PostgreSQL
    python bench/backfill_filled.py --rows 100000
    python bench/backfill_filled.py --database-url postgresql://...  # an empty database

The column is added with a default that every row already has, and its `up` only fills
rows where it is NULL: there is nothing to do. Prints the batches the backfill ran, the
scans of the table (pg_stat_user_tables: seq_scan + idx_scan) and the seconds it took.
"""

from __future__ import annotations

import argparse
import time

from _workload import q

from migrator import commands
from migrator.plan.loader import parse_plan

PLAN = """
release: filled
expand:
  - add_column:
      table: users
      column: {name: phone, type: text, default: "'none'"}
      up: "coalesce(legacy_phone, 'none')"
backfill: {batch_size: 1000}
"""


def scans(url: str) -> int:
    q(url, "SELECT pg_stat_force_next_flush()")
    row = q(
        url,
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
        "WHERE relid = 'public.users'::regclass",
    )
    return int(row[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    server = None
    url = args.database_url
    if url is None:
        from migrator.db.embedded import start

        server = start()
        url = server.url
    try:
        q(url, "CREATE TABLE users (id bigint PRIMARY KEY, legacy_phone text)")
        q(url, f"INSERT INTO users SELECT g, 'p' || g FROM generate_series(1, {args.rows}) g")
        q(url, "VACUUM ANALYZE users")
        plan = parse_plan(PLAN, "plan.yaml")
        opts = commands.Options(database_url=url)
        commands.expand(plan, opts)
        assert q(url, "SELECT count(*) FROM users WHERE phone IS NULL") == [(0,)]
        before = scans(url)
        started = time.monotonic()
        commands.backfill(plan, opts)
        seconds = time.monotonic() - started
        # The backfill's own sessions report their counts as they end.
        time.sleep(1)
        after = scans(url)
        batches = q(url, "SELECT coalesce(sum(batches), 0) FROM migrator.backfill_ranges")
        print(
            f"rows={args.rows} batches={batches[0][0]} table_scans={after - before} "
            f"seconds={seconds:.2f}"
        )
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
