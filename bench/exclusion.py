"""Benchmark: an exclusion constraint added to a table that exists, plain and by add_exclusion.

    python bench/exclusion.py                  # 1,000,000 bookings on an embedded PostgreSQL
    python bench/exclusion.py --rows 200000    # smaller
    python bench/exclusion.py --database-url postgresql://...  # a server of yours
    python bench/exclusion.py --rows 200000 --sweep-only       # (c) alone

``bookings (id bigint identity PRIMARY KEY, room int, during tstzrange)`` with --rows rows
that do not overlap is built once into a template database; each method runs on its own
copy while a reader thread reads one booking by id every 5 ms and times each read from
when it was sent to its answer (a lock wait is all in it), and a sampler polls pg_locks
for its lock waits and who blocks them (bench/_workload.py):

  (a) the baseline: one plain ``ALTER TABLE bookings ADD CONSTRAINT ... EXCLUDE USING
      gist (during WITH &&)``: the index build and the check under ACCESS EXCLUSIVE;
  (b) `migrator expand` of ``add_exclusion`` with the same element (max_lock_hold 1h, so
      it never refuses here): each step's wall time, the helper index's concurrent build
      and the ADD CONSTRAINT step, which is the ACCESS EXCLUSIVE hold.

  (c) the conflict check add_exclusion runs before anything changes on a table over
      256 kB (one sort of the rows, `exclusion_sweep`), for ``during WITH &&`` and for
      ``room WITH =, during WITH &&``, beside a concurrent build of the helper index
      (gist on during), the other way to find the conflicts, for scale.

Printed: the wall times, and the reader's longest read and count of reads during each.
PostgreSQL gives an exclusion constraint no lock-light form, so (b) still holds the lock
for about one build; what it adds is the build measured first without blocking (and
refused above max_lock_hold), and the conflicts found before the lock is taken.
"""

from __future__ import annotations

import argparse
import functools
import random
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from _workload import App, LockSampler, Op, StepTimes, Wait, q

from migrator import commands
from migrator.db.connection import connect, make_engine
from migrator.engine.catalog import Catalog
from migrator.engine.catalog_tables import exclusion_sweep, exclusion_sweep_key
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


def read_booking(rows: int, conn: psycopg.Connection[Any], rng: random.Random) -> tuple[str, Any]:
    conn.execute("SELECT room FROM bookings WHERE id = %s", (rng.randint(1, rows),)).fetchall()
    return "read", None


@dataclass
class Measured:
    """A method's wall time, the reader's reads during it and its lock waits."""

    wall: float
    reads: list[Op]
    wait: Wait | None

    def line(self) -> str:
        longest = max((o.seconds for o in self.reads), default=0.0)
        text = f"longest read {longest * 1000:.0f} ms over {len(self.reads)} reads"
        if self.wait is not None:
            text += (
                f"; longest lock wait seen {self.wait.seconds * 1000:.0f} ms: "
                f"{self.wait.describe()}"
            )
        return text


def measured(url: str, rows: int, run: Any) -> Measured:
    """``run()`` while a reader reads one booking by id every 5 ms (200/s) and the
    sampler watches its lock waits."""
    reader = App(url, functools.partial(read_booking, rows), rate=200, process=False).start()
    sampler = LockSampler(url).start()
    time.sleep(0.5)
    started = time.time()
    run()
    ended = time.time()
    time.sleep(0.2)
    ops = reader.finish()
    sampler.stop()
    return Measured(
        ended - started,
        [o for o in ops if o.sent >= started - 0.5],
        sampler.longest(started, time.time()),
    )


def sweep_lines(url: str) -> list[str]:
    """(c): the pre-change sweep for two shapes, and the helper index's concurrent build."""
    lines = []
    engine = make_engine(url)
    try:
        with connect(engine) as conn:
            cat = Catalog(conn)
            for keys, ops in ((["during"], ["&&"]), (["room", "during"], ["=", "&&"])):
                at = exclusion_sweep_key(cat, "public", "bookings", keys, ops)
                assert at is not None
                started = time.perf_counter()
                rows, _ = exclusion_sweep(cat, "public", "bookings", keys, at, None)
                took = time.perf_counter() - started
                shape = ", ".join(f"{k} WITH {o}" for k, o in zip(keys, ops, strict=True))
                lines.append(f"(c) sweep before anything, {shape}: {took:.3f} s ({rows} conflicts)")
            conn.rollback()
    finally:
        engine.dispose()
    started = time.perf_counter()
    q(url, "CREATE INDEX CONCURRENTLY bookings_during_probe ON bookings USING gist (during)")
    took = time.perf_counter() - started
    q(url, "DROP INDEX CONCURRENTLY bookings_during_probe")
    lines.append(
        f"    for scale: the helper index's concurrent build (gist on during): {took:.3f} s"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url")
    parser.add_argument("--sweep-only", action="store_true", help="(c) alone")
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
        if args.sweep_only:
            print("\n".join(sweep_lines(url_of(template))))
            return

        plain = url_of("exclusion_plain")
        q(url, "CHECKPOINT")
        plain_run = measured(
            plain,
            args.rows,
            lambda: q(
                plain,
                "ALTER TABLE bookings ADD CONSTRAINT bookings_no_overlap "
                "EXCLUDE USING gist (during WITH &&)",
            ),
        )
        print(
            f"(a) plain ADD CONSTRAINT ... EXCLUDE: {plain_run.wall:.3f} s under ACCESS "
            f"EXCLUSIVE; {plain_run.line()}"
        )

        ours = url_of("exclusion_migrator")
        q(url, "CHECKPOINT")
        steps = StepTimes()
        plan = parse_plan(PLAN)
        ours_run = measured(
            ours,
            args.rows,
            lambda: commands.expand(plan, commands.Options(database_url=ours, observer=steps)),
        )
        print(f"(b) migrator expand (add_exclusion): {ours_run.wall:.3f} s in all")
        for run in steps.steps:
            print(f"    {run.name}: {run.seconds:.3f} s")
        print(f"    {ours_run.line()} (the ADD CONSTRAINT step above is the ACCESS EXCLUSIVE hold)")
        print("\n".join(sweep_lines(url_of(template))))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
