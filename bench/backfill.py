"""Benchmark: migrator's backfill against the usual ways of filling a new column.

    python bench/backfill.py                 # 10,000,000 rows on an embedded PostgreSQL
    python bench/backfill.py --rows 1000000  # smaller
    python bench/backfill.py --database-url postgresql://...  # a server of yours

A table of ``--rows`` users is generated once into a template database, VACUUM ANALYZEd,
and expanded by `migrator expand` (column ``phone`` added, sync trigger installed), the
state every method starts from. Each method then runs on its own fresh copy of that
template (CREATE DATABASE ... TEMPLATE, a file copy), after a CHECKPOINT:

  (a) one plain UPDATE of the whole table, in one transaction: the limit;
  (b) the pgroll algorithm: pgroll's row trigger (computes the new column on every
      update; replaces migrator's), and batches of 1000 keys chosen by a CTE with
      ORDER BY ... LIMIT ... FOR NO KEY UPDATE doing a no-op UPDATE (SET id = id), each
      its own transaction;
  (c) naive OFFSET batching: UPDATE ... WHERE id IN (SELECT id ... ORDER BY id
      LIMIT 1000 OFFSET n), each its own transaction. It is quadratic, so it runs for at
      most --offset-budget seconds and its rate is measured over the rows it reached
      (an upper bound: it only slows down further on);
  (d) `migrator backfill` (commands.backfill) with 1 and with 2 workers, plan defaults
      (batch_size auto, target_batch_time 200ms, throttling on); and once more with 1
      worker walking each range in one pass instead of two, for comparison.

Each line also gives the WAL written per row filled and the table's size afterwards
(with its indexes; 1.1 GB before at 10M rows).

Under load, (d) also runs once with --short-batches (target_batch_time 50ms by default,
not the plan default), to show what shorter row-lock holds do to the workload.

Then (a) and (d, 1 worker) run again while a second process plays an OLTP workload on
the same table (point reads and single-row updates by primary key, paced at
--workload-rate per second), and the workload's latency is printed: idle (workload
alone), during (a), during (d): p50, p99 and the longest single wait.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from migrator import commands
from migrator.backfill import runner
from migrator.plan.loader import parse_plan

PLAN = """
release: bench-add-phone
database: {lock_timeout: 1s, retries: 20}
expand:
  - add_column:
      table: users
      column: {name: phone, type: text}
      up: "coalesce(legacy_phone, '')"
"""
FILL = "coalesce(legacy_phone, '')"

SCHEMA = """
CREATE TABLE users (
    id           bigint PRIMARY KEY,
    email        text NOT NULL,
    legacy_phone text,
    counter      integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL
)
"""
LOAD = """
INSERT INTO users (id, email, legacy_phone, created_at)
SELECT g, 'user' || g || '@example.com',
       CASE WHEN g %% 10 = 0 THEN NULL ELSE '+1555' || lpad(g::text, 8, '0') END,
       timestamptz '2020-01-01' + g * interval '1 second'
FROM generate_series(%s::bigint, %s::bigint) g
"""

PGROLL_TRIGGER = """
CREATE OR REPLACE FUNCTION pgroll_users_phone_up() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  "id" users."id"%TYPE := NEW."id";
  "email" users."email"%TYPE := NEW."email";
  "legacy_phone" users."legacy_phone"%TYPE := NEW."legacy_phone";
  "counter" users."counter"%TYPE := NEW."counter";
  "created_at" users."created_at"%TYPE := NEW."created_at";
  latest_schema text;
  search_path text;
BEGIN
  SELECT current_setting INTO search_path FROM current_setting('search_path');
  latest_schema := 'public_bench_add_phone';
  IF search_path != latest_schema THEN
    NEW."phone" = coalesce(legacy_phone, '');
  END IF;
  RETURN NEW;
END; $$;
CREATE TRIGGER pgroll_users_phone_up BEFORE INSERT OR UPDATE ON users
FOR EACH ROW EXECUTE FUNCTION pgroll_users_phone_up();
"""
PGROLL_BATCH = """
WITH batch AS (
  SELECT id FROM users {after} ORDER BY id LIMIT 1000 FOR NO KEY UPDATE
), update AS (
  UPDATE users SET id = users.id FROM batch WHERE users.id = batch.id RETURNING users.id
)
SELECT max(id), count(*) FROM update
"""
OFFSET_BATCH = (
    f"UPDATE users SET phone = {FILL} "
    "WHERE id IN (SELECT id FROM users ORDER BY id LIMIT 1000 OFFSET %s)"
)


# -- the server and its databases ------------------------------------------------------------


class Server:
    """Hands out database URLs on the embedded server or on --database-url's server."""

    def __init__(self, url: str | None) -> None:
        self.embedded: Any = None
        if url is None:
            from migrator.db.embedded import start

            self.embedded = start()
            url = self.embedded.url
        self.admin = url
        if self.embedded is not None:
            # Ours alone: fewer forced checkpoints while 10M rows are rewritten (same for
            # every method).
            self.run("ALTER SYSTEM SET max_wal_size = '4GB'")
            self.run("SELECT pg_reload_conf()")

    def run(self, query: str, db: str | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url(db) if db else self.admin, autocommit=True) as conn:
            cur = conn.execute(query.encode() if isinstance(query, str) else query)
            return cur.fetchall() if cur.description else []

    def url(self, db: str) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self.admin)
        info["dbname"] = db
        host, port, user = info.get("host", ""), info.get("port"), info.get("user", "postgres")
        password = info.get("password")
        auth = f"{user}:{password}@" if password else f"{user}@"
        if str(host).startswith("/"):
            return f"postgresql://{auth}/{db}?host={host}" + (f"&port={port}" if port else "")
        return f"postgresql://{auth}{host}{':' + str(port) if port else ''}/{db}"

    def copy(self, name: str, template: str) -> str:
        self.drop(name)
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
            conn.execute("CHECKPOINT")
        # The copy's files are still being written back by the kernel: let that finish,
        # or the first method measured pays for it (seen: the workload's commits, each
        # an fsync, 20x slower in the run right after a copy than in the next).
        os.sync()
        return self.url(name)

    def drop(self, name: str) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def build_template(server: Server, rows: int) -> str:
    """The users table, loaded, vacuumed, and expanded by migrator."""
    server.drop("bench_tpl")
    server.run("CREATE DATABASE bench_tpl")
    url = server.url("bench_tpl")
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        chunk = 1_000_000
        for first in range(1, rows + 1, chunk):
            conn.execute(LOAD, (first, min(rows, first + chunk - 1)))
        conn.execute("VACUUM (ANALYZE) users")
    commands.expand(plan(), commands.Options(database_url=url))
    size = server.run("SELECT pg_size_pretty(pg_total_relation_size('users'))", "bench_tpl")
    print(f"template: {rows:,} rows, {size[0][0]}, built in {time.perf_counter() - started:.0f}s")
    return url


def plan() -> Any:
    return parse_plan(PLAN, "bench-plan.yaml")


# -- the methods -----------------------------------------------------------------------------


def method_plain_update(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(f"UPDATE users SET phone = {FILL} WHERE phone IS NULL")
        return cur.rowcount


def method_pgroll(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        for (name,) in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'users'::regclass AND NOT tgisinternal"
        ).fetchall():
            conn.execute(sql.SQL("DROP TRIGGER {} ON users").format(sql.Identifier(name)))
        conn.execute(PGROLL_TRIGGER)
        last: int | None = None
        done = 0
        while True:
            if last is None:
                row = conn.execute(PGROLL_BATCH.format(after="")).fetchone()
            else:
                row = conn.execute(PGROLL_BATCH.format(after="WHERE id > %s"), (last,)).fetchone()
            if row is None or not row[1]:
                return done
            last, done = int(row[0]), done + int(row[1])


def method_offset(url: str, budget: float) -> tuple[int, bool]:
    started = time.perf_counter()
    done, offset = 0, 0
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            cur = conn.execute(OFFSET_BATCH, (offset,))
            if cur.rowcount <= 0:
                return done, False
            done += cur.rowcount
            offset += 1000
            if time.perf_counter() - started > budget:
                return done, True


def method_migrator(
    url: str, workers: int, target: str | None = None, *, one_pass: bool = False
) -> int:
    chosen = (
        plan()
        if target is None
        else parse_plan(PLAN + f"backfill: {{target_batch_time: {target}}}\n", "bench-plan.yaml")
    )
    # A different target_batch_time is a changed plan: say that it is meant.
    options = commands.Options(database_url=url, accept_changed_plan=target is not None)
    if not one_pass:
        return commands.backfill(chosen, options, workers=workers).rows
    # The walk before passes, for comparison: each range in one pass.
    passes = runner.Backfill.passes
    runner.Backfill.passes = lambda self, conn: 1  # type: ignore[method-assign]
    try:
        return commands.backfill(chosen, options, workers=workers).rows
    finally:
        runner.Backfill.passes = passes  # type: ignore[method-assign]


def unfilled(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM users WHERE phone IS NULL").fetchone()
        return int(row[0]) if row else -1


# -- the OLTP workload (a second process) ------------------------------------------------------


def workload(
    url: str, rows: int, rate: float, stop: Any, stop_at: Any, ready: Any, out: Any
) -> None:
    """Point reads and single-row updates by primary key, scheduled at ``rate`` per second.

    Sends back (scheduled wall time, latency, service time) for every operation. The
    latency counts from when the operation was due, not from when a blocked client got
    round to sending it (no coordinated omission): after a 5s wait, the requests that
    queued up behind it are late too, as an application's users would see. Once told
    to stop, it still serves every request that fell due before ``stop_at``.
    """
    rng = random.Random(7)
    samples: list[tuple[float, float, float]] = []
    interval = 1.0 / rate
    with psycopg.connect(url, autocommit=True) as conn:
        read = "SELECT id, email, legacy_phone, counter FROM users WHERE id = %s"
        write = "UPDATE users SET counter = counter + 1 WHERE id = %s"
        for i in range(20):  # warm up (psycopg prepares statements after a few runs)
            conn.execute(read if i % 2 else write, (rng.randint(1, rows),))
        ready.set()
        offset = time.time() - time.perf_counter()
        due = time.perf_counter()
        i = 0
        while not (stop.is_set() and due + offset > stop_at.value):
            key = rng.randint(1, rows)
            started = time.perf_counter()
            if i % 2:
                conn.execute(read, (key,)).fetchone()
            else:
                conn.execute(write, (key,))
            ended = time.perf_counter()
            samples.append((due + offset, ended - due, ended - started))
            i += 1
            due += interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    out.put(samples)


class Workload:
    """The workload process for one measurement."""

    def __init__(self, url: str, rows: int, rate: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop, self.ready, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
        self.stop_at = ctx.Value("d", 0.0)
        self.proc = ctx.Process(
            target=workload,
            args=(url, rows, rate, self.stop, self.stop_at, self.ready, self.out),
        )

    def __enter__(self) -> Workload:
        self.proc.start()
        if not self.ready.wait(120):
            raise RuntimeError("the workload process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_at.value = time.time()
        self.stop.set()
        self.samples: list[tuple[float, float, float]] = self.out.get(timeout=120)
        self.proc.join(30)

    def between(self, start: float, end: float) -> tuple[list[float], list[float]]:
        """Of the operations due in the window: latencies from when they were due, and
        the time each statement itself took."""
        inside = [(lat, service) for due, lat, service in self.samples if start <= due <= end]
        return [lat for lat, _ in inside], [service for _, service in inside]


def latency(samples: list[float]) -> dict[str, float]:
    """n, p50 and p99 in milliseconds."""
    if not samples:
        return {"n": 0, "p50": float("nan"), "p99": float("nan")}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered) * 1000,
        "p99": p99 * 1000,
    }


A = "(a) plain UPDATE"
B = "(b) pgroll: trigger + CTE 1000"
C = "(c) naive OFFSET 1000"
D1 = "(d) migrator, 1 worker"
D2 = "(d) migrator, 2 workers"
D1P = "(d) 1 worker, one pass"

# -- running it ------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--database-url", default=None, help="a server (default: embedded)")
    parser.add_argument("--offset-budget", type=float, default=120.0)
    parser.add_argument("--workload-rate", type=float, default=200.0)
    parser.add_argument("--idle-seconds", type=float, default=15.0)
    parser.add_argument(
        "--short-batches",
        default="50ms",
        help="also run (d) under load with this target_batch_time ('' to skip)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds of a, b, d (median)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the throwaway run")
    parser.add_argument("--skip", default="", help="comma list of a,b,c,d1,d2,d1p,load to skip")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    rows = args.rows
    server = Server(args.database_url)
    try:
        version = server.run("SHOW server_version")[0][0]
        settings = {
            name: server.run(f"SHOW {name}")[0][0]
            for name in ("shared_buffers", "max_wal_size", "synchronous_commit")
        }
        print(
            f"PostgreSQL {version}; {os.cpu_count()} cores (nproc), shared with other jobs; "
            + ", ".join(f"{k}={v}" for k, v in settings.items())
        )
        build_template(server, rows)
        results: dict[str, list[float]] = {}

        def measure(label: str, fn: Callable[[str], Any], note: str = "") -> None:
            url = server.copy("bench_run", "bench_tpl")
            lsn = server.run("SELECT pg_current_wal_lsn()")[0][0]
            value, seconds = timed(lambda: fn(url))
            wal = float(server.run(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')")[0][0])
            done, cut = value if isinstance(value, tuple) else (value, False)
            left = unfilled(url)
            size = server.run(
                "SELECT pg_size_pretty(pg_total_relation_size('users'))", "bench_run"
            )[0][0]
            extra = f"WAL {wal / max(done, 1):4.0f} B/row, table {size}"
            extra += (f"; {note}" if note else "") + (
                f"; partial: {done:,} rows in the budget" if cut else ""
            )
            if not cut and left:
                extra += f"; {left:,} ROWS LEFT UNFILLED"
            results.setdefault(label, []).append(done / seconds)
            print(f"  {label:<32} {seconds:8.1f}s {done / seconds:10,.0f} rows/s  {extra}")
            server.drop("bench_run")

        if not args.no_warmup:
            # The first heavy write after the template was built runs slower than any
            # later one (seen: the workload's writes 10x slower in it): a throwaway
            # plain UPDATE takes that turn, so (a), measured first, is not penalised.
            url = server.copy("bench_run", "bench_tpl")
            _, seconds = timed(lambda: method_plain_update(url))
            server.drop("bench_run")
            print(f"warm-up: one plain UPDATE, not counted ({seconds:.0f}s)")
        print(f"\nfilling phone on {rows:,} rows (each method on a fresh copy):")
        methods: list[tuple[str, str, Callable[[str], Any], str]] = [
            ("a", A, method_plain_update, "one transaction"),
            ("b", B, method_pgroll, ""),
            ("d1", D1, lambda url: method_migrator(url, 1), ""),
            ("d2", D2, lambda url: method_migrator(url, 2), ""),
            ("d1p", D1P, lambda url: method_migrator(url, 1, one_pass=True), ""),
        ]
        methods = [m for m in methods if m[0] not in skip]
        for round_ in range(args.repeat):
            if args.repeat > 1:
                print(f" round {round_ + 1} of {args.repeat}:")
            # Each round starts one method later: what a run leaves behind (a checkpoint
            # under way, WAL segments to recycle or to create anew) falls on a different
            # method each time, not always on the same one. (Seen once: (d) 337k rows/s
            # after (c), which writes little, 308-311k after (b), which writes 5 GB; the
            # next run had 334k right after (b), so the order is not all of the noise.)
            shift = round_ % max(len(methods), 1)
            for _, label, fn, note in methods[shift:] + methods[:shift]:
                measure(label, fn, note)
            if "c" not in skip and round_ == 0:
                measure(
                    C,
                    lambda url: method_offset(url, args.offset_budget),
                    f"budget {args.offset_budget:g}s",
                )

        def rate(label: str) -> float | None:
            runs = results.get(label)
            return statistics.median(runs) if runs else None

        if args.repeat > 1:
            print("\nmedian rows/s over the rounds (min - max):")
            for label, runs in results.items():
                print(
                    f"  {label:<32} {statistics.median(runs):10,.0f}"
                    f"   ({min(runs):,.0f} - {max(runs):,.0f}, {len(runs)} runs)"
                )
        print("\nratios (rows/s over rows/s):")
        for d in (D1, D2):
            for base, target in (
                (A, 1.2 if d == D1 else 1.8),
                (B, 1.6),
                (C, None),
            ):
                top, bottom = rate(d), rate(base)
                if top is None or bottom is None:
                    continue
                goal = ""
                if target is not None:
                    verdict = "met" if top / bottom >= target else "NOT met"
                    goal = f"  target >= {target}: {verdict}"
                print(f"  {d[4:]:<20} / {base[:3]} = {top / bottom:5.2f}{goal}")

        if "load" in skip:
            return
        print(
            f"\nOLTP workload from a second process ({args.workload_rate:g} ops/s scheduled, "
            "point reads + single-row updates by id), in ms.\n  statement: the time each "
            "statement took; from due: from when it was due (includes queueing behind a\n"
            "  blocked one: no coordinated omission); longest: the longest single statement"
        )
        print(
            f"  {'':<26} {'ops':>7} {'p50':>8} {'p99':>9}   {'p50 due':>9} {'p99 due':>9}"
            f" {'longest':>9}   fill rows/s"
        )
        idle_p99 = None
        phases: list[tuple[str, Callable[[str], Any] | None]] = [
            ("idle (workload alone)", None),
            ("during (a) plain UPDATE", method_plain_update),
            ("during (d) migrator, 1 w", lambda url: method_migrator(url, 1)),
        ]
        if args.short_batches:
            # Not the default: shorter batches hold each row lock for less time.
            phases.append(
                (
                    f"during (d), {args.short_batches} batches",
                    lambda url: method_migrator(url, 1, args.short_batches),
                )
            )
        for label, fn in phases:
            url = server.copy("bench_run", "bench_tpl")
            with Workload(url, rows, args.workload_rate) as load:
                time.sleep(2.0)
                start = time.time()
                if fn is None:
                    time.sleep(args.idle_seconds)
                    fill = ""
                else:
                    value, seconds = timed(partial(fn, url))
                    fill = f"{int(value) / seconds:11,.0f}"
                end = time.time()
            from_due, statements = load.between(start, end)
            due, stats = latency(from_due), latency(statements)
            if fn is None:
                idle_p99 = stats["p99"]
            ratio = f"  p99 {stats['p99'] / idle_p99:.1f}x idle" if idle_p99 and fn else ""
            longest = max(statements, default=0.0) * 1000
            print(
                f"  {label:<26} {stats['n']:7d} {stats['p50']:8.2f} {stats['p99']:9.2f}   "
                f"{due['p50']:9.2f} {due['p99']:9.2f} {longest:9.1f}   {fill}{ratio}"
            )
            server.drop("bench_run")
        print("  target: p99 (statement) during (d) <= 2x idle p99")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
