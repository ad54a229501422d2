"""Benchmark: int -> bigint of an identity primary key two foreign keys point at, under load.

    python bench/retype.py                 # 10,000,000 users on an embedded PostgreSQL
    python bench/retype.py --rows 1000000  # smaller
    python bench/retype.py --database-url postgresql://...  # a server of yours

``users (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ...)`` with --rows rows, and
``orders`` and ``payments`` (--rows / 10 each) whose ``user_id`` references it, are built
once into a template database. Each method then runs on its own copy of it (CREATE
DATABASE ... TEMPLATE) while a second process plays a workload on the same tables:
point reads of users by id, and inserts of a user and an order for it, paced at
--workload-rate operations per second (30% inserts). Each operation's time runs from
when it was sent to its answer, so a lock wait is all in it.

  (a) the baseline: one plain ``ALTER TABLE users ALTER COLUMN id TYPE bigint``, which
      rewrites the table, rebuilds its indexes and re-checks both foreign keys while it
      holds ACCESS EXCLUSIVE;
  (b) `migrator`: expand, backfill, complete, contract of a plan with
      ``alter_column: {table: users, column: id, type: bigint}``.

Printed: each phase's wall time, the workload's longest wait and p99 in each phase (goal:
under 250 ms at every phase of (b)), (b)'s longest wait over (a)'s as a ratio, and after
the swap the sequence's state, the largest id before it and the first id an insert got
after it (which must be larger: no collision).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import psycopg

from migrator import commands
from migrator.plan.loader import parse_plan

PLAN = """
release: retype
database: {lock_timeout: 200ms, retries: 20}
expand:
  - alter_column: {table: users, column: id, type: bigint}
"""

SCHEMA = """
CREATE TABLE users (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     user_id int NOT NULL REFERENCES users (id), amount numeric NOT NULL);
CREATE TABLE payments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                       user_id int NOT NULL REFERENCES users (id), total numeric NOT NULL);
"""


def q(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode())
        return cur.fetchall() if cur.description else []


def build_template(url: str, rows: int) -> None:
    started = time.perf_counter()
    q(url, SCHEMA)
    q(url, f"INSERT INTO users (name) SELECT 'user' || g FROM generate_series(1, {rows}) g")
    small = max(rows // 10, 1)
    for table, column in (("orders", "amount"), ("payments", "total")):
        q(
            url,
            f"INSERT INTO {table} (user_id, {column}) "
            f"SELECT 1 + (g::bigint * 7919) % {rows}, g FROM generate_series(1, {small}) g",
        )
    q(url, "CREATE INDEX orders_user_id_idx ON orders (user_id)")
    q(url, "CREATE INDEX payments_user_id_idx ON payments (user_id)")
    q(url, "VACUUM ANALYZE")
    size = q(url, "SELECT pg_size_pretty(pg_total_relation_size('users'))")[0][0]
    print(
        f"template: {rows:,} users ({size} with indexes), {small:,} orders and payments, "
        f"built in {time.perf_counter() - started:.0f}s",
        flush=True,
    )


# -- the workload ----------------------------------------------------------------------


def workload(url: str, rows: int, rate: float, ready: Any, stop: Any, out: Connection) -> None:
    """Point reads and inserts at ``rate`` per second until ``stop``; sends back
    (due, service time, kind, inserted id or None, error or None) for every operation.
    The service time runs from when the operation was sent to its answer: a lock wait
    is all in it. ``ready`` is set once the first operation is done."""
    records: list[tuple[float, float, str, int | None, str | None]] = []
    rng = random.Random(7)
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        conn.execute("SET statement_timeout = '600s'")
        due = time.time()
        while not stop.is_set():
            due += 1.0 / rate
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            sent = time.time()
            kind = "insert" if rng.random() < 0.3 else "read"
            new_id: int | None = None
            error: str | None = None
            try:
                if kind == "read":
                    conn.execute(
                        "SELECT id, name FROM users WHERE id = %s", (rng.randint(1, rows),)
                    ).fetchall()
                else:
                    with conn.transaction():
                        row = conn.execute(
                            "INSERT INTO users (name) VALUES ('w') RETURNING id"
                        ).fetchone()
                        assert row is not None
                        new_id = int(row[0])
                        conn.execute(
                            "INSERT INTO orders (user_id, amount) VALUES (%s, 1)", (new_id,)
                        )
            except psycopg.Error as exc:
                error = str(exc).splitlines()[0]
            records.append((sent, time.time() - sent, kind, new_id, error))
            ready.set()
    out.send(records)


@dataclass
class Loaded:
    """A workload process on one database; `finish` returns its records."""

    process: Any
    stop: Any
    receiver: Connection

    @classmethod
    def start(cls, url: str, rows: int, rate: float) -> Loaded:
        ctx = multiprocessing.get_context("spawn")
        stop, ready = ctx.Event(), ctx.Event()
        receiver, sender = ctx.Pipe(duplex=False)
        process = ctx.Process(target=workload, args=(url, rows, rate, ready, stop, sender))
        process.start()
        if not ready.wait(120):
            raise SystemExit("the workload did not start")
        return cls(process, stop, receiver)

    def finish(self) -> list[tuple[float, float, str, int | None, str | None]]:
        self.stop.set()
        records: list[tuple[float, float, str, int | None, str | None]] = self.receiver.recv()
        self.process.join()
        return records


def summary(
    records: list[tuple[float, float, str, int | None, str | None]], start: float, end: float
) -> tuple[int, float, float, int]:
    """Operations sent in [start, end): count, p99 and longest service time (ms), errors."""
    window = [r for r in records if start <= r[0] < end]
    if not window:
        return 0, 0.0, 0.0, 0
    latencies = sorted(r[1] * 1000 for r in window)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(window), p99, latencies[-1], sum(1 for r in window if r[4])


def settle(seconds: float) -> None:
    """Idle time for the workload alone before and after a method (its idle figures)."""
    time.sleep(seconds)


def phase_lines(
    label: str,
    phases: list[tuple[str, float, float]],
    records: list[tuple[float, float, str, int | None, str | None]],
) -> float:
    """Print each phase's wall time and the workload in it; return the longest wait."""
    print(f"\n{label}")
    print(
        f"  {'phase':<12} {'wall s':>8} {'ops':>7} {'p99 ms':>8} {'longest ms':>11} {'errors':>6}"
    )
    worst = 0.0
    for name, start, end in phases:
        n, p99, longest, errors = summary(records, start, end)
        if name != "idle":
            worst = max(worst, longest)
        print(f"  {name:<12} {end - start:8.1f} {n:7d} {p99:8.1f} {longest:11.1f} {errors:6d}")
    return worst


def run_plain(url: str, rows: int, rate: float, idle: float) -> tuple[float, float]:
    loaded = Loaded.start(url, rows, rate)
    t0 = time.time()
    settle(idle)
    t1 = time.time()
    q(url, "ALTER TABLE users ALTER COLUMN id TYPE bigint")
    t2 = time.time()
    settle(idle)
    t3 = time.time()
    records = loaded.finish()
    phases = [("idle", t0, t1), ("alter", t1, t2), ("after", t2, t3)]
    worst = phase_lines("(a) plain ALTER COLUMN id TYPE bigint", phases, records)
    return worst, t2 - t1


def run_migrator(
    url: str, rows: int, rate: float, idle: float
) -> tuple[float, float, dict[str, float]]:
    plan = parse_plan(PLAN, "retype.yaml")
    opts = commands.Options(database_url=url)
    # (the verbs' modules load here, not inside the idle window)
    verbs = (
        ("expand", commands.expand),
        ("backfill", commands.backfill),
        ("complete", commands.complete),
    )
    contract = commands.contract
    loaded = Loaded.start(url, rows, rate)
    marks = [("idle", time.time())]
    settle(idle)
    for name, verb in verbs:
        marks.append((name, time.time()))
        verb(plan, opts)
    marks.append(("contract", time.time()))
    before_swap_max = int(q(url, "SELECT max(id) FROM users")[0][0])
    contract(opts)
    marks.append(("after", time.time()))
    settle(idle)
    end = time.time()
    records = loaded.finish()
    phases = [
        (name, start, marks[i + 1][1] if i + 1 < len(marks) else end)
        for i, (name, start) in enumerate(marks)
    ]
    worst = phase_lines("(b) migrator: expand, backfill, complete, contract", phases, records)
    swap_end = marks[-1][1]
    after = sorted(r[3] for r in records if r[3] is not None and r[0] >= swap_end)
    seq = q(
        url,
        "SELECT s.last_value, s.is_called, format_type(p.seqtypid, NULL), p.seqmax, "
        "a.attidentity::text, format_type(a.atttypid, NULL) "
        "FROM users_id_seq s, pg_sequence p, pg_attribute a "
        "WHERE p.seqrelid = 'users_id_seq'::regclass AND a.attrelid = 'users'::regclass "
        "AND a.attname = 'id'",
    )[0]
    print(
        f"\n  after the swap: users.id {seq[5]}, identity {'ALWAYS' if seq[4] == 'a' else seq[4]}, "
        f"sequence users_id_seq as {seq[2]} (max {seq[3]}), last_value {seq[0]} "
        f"(is_called {seq[1]})"
    )
    first = after[0] if after else None
    print(
        f"  largest id when the contract began: {before_swap_max:,}; first id inserted after "
        f"the swap: {first:,}"
        if first is not None
        else "  no insert after the swap"
    )
    if first is not None and first <= before_swap_max:
        raise SystemExit("collision: an id after the swap is not beyond the ids before it")
    totals = {name: end_ - start for name, start, end_ in phases}
    wall = sum(v for k, v in totals.items() if k not in ("idle", "after"))
    return worst, wall, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workload-rate", type=float, default=50.0)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of workload alone")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    server = None
    url = args.database_url
    if url is None:
        from migrator.db.embedded import start

        server = start()
        url = server.url
    try:
        template = "retype_template"

        def url_of(name: str) -> str:
            return psycopg.conninfo.make_conninfo(url, dbname=name)

        q(url, f"DROP DATABASE IF EXISTS {template}")
        q(url, f"CREATE DATABASE {template}")
        build_template(url_of(template), args.rows)
        for name in ("retype_plain", "retype_migrator"):
            q(url, f"DROP DATABASE IF EXISTS {name}")
            q(url, f"CREATE DATABASE {name} TEMPLATE {template}")
        q(url, "CHECKPOINT")
        plain_worst, plain_wall = run_plain(
            url_of("retype_plain"), args.rows, args.workload_rate, args.idle
        )
        q(url, "CHECKPOINT")
        worst, wall, _ = run_migrator(
            url_of("retype_migrator"), args.rows, args.workload_rate, args.idle
        )
        print(
            f"\nlongest wait: migrator {worst:.0f} ms, plain ALTER {plain_worst:.0f} ms: "
            f"ratio {worst / max(plain_worst, 0.001):.3f} (goal: migrator under 250 ms: "
            f"{'met' if worst < 250 else 'NOT met'})"
        )
        print(
            f"wall time: migrator {wall:.1f} s (expand to contract), plain ALTER "
            f"{plain_wall:.1f} s: ratio {wall / plain_wall:.2f}"
        )
        for name in ("retype_plain", "retype_migrator", template):
            q(url, f"DROP DATABASE IF EXISTS {name}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
