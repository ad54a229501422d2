"""Benchmark: an exclusion constraint added to a table that exists, plain and by add_exclusion.

    python bench/exclusion.py                  # 1,000,000 bookings on an embedded PostgreSQL
    python bench/exclusion.py --rows 200000    # smaller
    python bench/exclusion.py --database-url postgresql://...  # a server of yours

``bookings (id bigint identity PRIMARY KEY, room int, during tstzrange)`` with --rows rows
that do not overlap is built once into a template database; each method runs on its own
copy while a reader thread reads one booking by id every 5 ms and times each read from
when it was sent to its answer (a lock wait is all in it):

  (a) the baseline: one plain ``ALTER TABLE bookings ADD CONSTRAINT ... EXCLUDE USING
      gist (during WITH &&)``: the index build and the check under ACCESS EXCLUSIVE;
  (b) `migrator expand` of ``add_exclusion`` with the same element (max_lock_hold 1h, so
      it never refuses here): each step's wall time, the helper index's concurrent build
      and the ADD CONSTRAINT step, which is the ACCESS EXCLUSIVE hold.

Printed: the wall times, and the reader's longest read and count of reads during each.
PostgreSQL gives an exclusion constraint no lock-light form, so (b) still holds the lock
for about one build; what it adds is the build measured first without blocking (and
refused above max_lock_hold), and the conflicts found before the lock is taken.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import psycopg

from migrator import commands
from migrator.observer import Observer
from migrator.plan.loader import parse_plan

PLAN = """
release: exclusion
database: {lock_timeout: 1s, retries: 5}
expand:
  - add_exclusion:
      table: bookings
      name: bookings_no_overlap
      elements: [{column: during, with: "&&"}]
      max_lock_hold: 1h
"""

SCHEMA = """
CREATE TABLE bookings (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, room int NOT NULL,
                       during tstzrange NOT NULL);
"""


def q(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


def build_template(url: str, rows: int) -> None:
    q(url, SCHEMA)
    q(
        url,
        "INSERT INTO bookings (room, during) SELECT g % 50, "
        "tstzrange('2020-01-01'::timestamptz + g * interval '1 hour', "
        "'2020-01-01'::timestamptz + g * interval '1 hour' + interval '50 minutes') "
        f"FROM generate_series(1, {rows}) g",
    )
    q(url, "VACUUM ANALYZE bookings")


class Reader(threading.Thread):
    """Reads one booking by id every 5 ms; keeps the longest read and the count."""

    def __init__(self, url: str, rows: int) -> None:
        super().__init__(daemon=True)
        self.url, self.rows = url, rows
        self.stop = threading.Event()
        self.longest = 0.0
        self.reads = 0

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            n = 0
            while not self.stop.is_set():
                n += 1
                sent = time.perf_counter()
                conn.execute("SELECT room FROM bookings WHERE id = %s", (1 + n % self.rows,))
                self.longest = max(self.longest, time.perf_counter() - sent)
                self.reads += 1
                time.sleep(0.005)


class Steps(Observer):
    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    def step_done(self, step: str, description: str, seconds: float) -> None:
        self.times.append((step, seconds))


def measured(url: str, rows: int, run: Any) -> tuple[float, Reader]:
    reader = Reader(url, rows)
    reader.start()
    time.sleep(0.5)
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    time.sleep(0.2)
    reader.stop.set()
    reader.join()
    return wall, reader


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
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
        template = "exclusion_template"

        def url_of(name: str) -> str:
            return psycopg.conninfo.make_conninfo(url, dbname=name)

        q(url, f"DROP DATABASE IF EXISTS {template}")
        q(url, f"CREATE DATABASE {template}")
        build_template(url_of(template), args.rows)
        for name in ("exclusion_plain", "exclusion_migrator"):
            q(url, f"DROP DATABASE IF EXISTS {name}")
            q(url, f"CREATE DATABASE {name} TEMPLATE {template}")
        size = q(url_of(template), "SELECT pg_size_pretty(pg_relation_size('bookings'))")[0][0]
        print(f"bookings: {args.rows} rows, {size}; {q(url, 'SHOW server_version')[0][0]}")

        plain = url_of("exclusion_plain")
        q(url, "CHECKPOINT")
        wall, reader = measured(
            plain,
            args.rows,
            lambda: q(
                plain,
                "ALTER TABLE bookings ADD CONSTRAINT bookings_no_overlap "
                "EXCLUDE USING gist (during WITH &&)",
            ),
        )
        print(
            f"(a) plain ADD CONSTRAINT ... EXCLUDE: {wall:.3f} s under ACCESS EXCLUSIVE; "
            f"longest read {reader.longest * 1000:.0f} ms over {reader.reads} reads"
        )

        ours = url_of("exclusion_migrator")
        q(url, "CHECKPOINT")
        steps = Steps()
        plan = parse_plan(PLAN)
        wall, reader = measured(
            ours,
            args.rows,
            lambda: commands.expand(plan, commands.Options(database_url=ours, observer=steps)),
        )
        print(f"(b) migrator expand (add_exclusion): {wall:.3f} s in all")
        for step, seconds in steps.times:
            print(f"    {step}: {seconds:.3f} s")
        print(
            f"    longest read {reader.longest * 1000:.0f} ms over {reader.reads} reads "
            "(the ADD CONSTRAINT step above is the ACCESS EXCLUSIVE hold)"
        )
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
