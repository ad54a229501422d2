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

A sampler (bench/_workload.py) polls pg_locks every --sample seconds for the workload's
lock waits: how long, the lock and mode waited for, and the statement of the session
blocking it (pg_blocking_pids), which names the step that made the application wait.

Printed: each phase's wall time, the workload's longest operation, p99 and longest lock
wait in each phase (goal: under 250 ms at every phase of (b)), (b)'s longest operation
over (a)'s as a ratio, the longest lock waits with their blockers, and after
the swap the sequence's state, the largest id before it and the first id an insert got
after it (which must be larger: no collision).
"""

from __future__ import annotations

import argparse
import functools
import random
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from _workload import App, LockSampler, Op, StepTimes, q, summary

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


def operation(rows: int, conn: psycopg.Connection[Any], rng: random.Random) -> tuple[str, Any]:
    """A point read of a user by id (70%), or a user and an order for it inserted in one
    transaction (30%: the order's foreign key check reads the user); an insert keeps the
    id it got."""
    if rng.random() >= 0.3:
        conn.execute("SELECT id, name FROM users WHERE id = %s", (rng.randint(1, rows),)).fetchall()
        return "read", None
    with conn.transaction():
        row = conn.execute("INSERT INTO users (name) VALUES ('w') RETURNING id").fetchone()
        assert row is not None
        conn.execute("INSERT INTO orders (user_id, amount) VALUES (%s, 1)", (row[0],))
    return "insert", int(row[0])


@dataclass
class Loaded:
    """The workload and the lock sampler on one database; `finish` stops both."""

    app: App
    sampler: LockSampler

    @classmethod
    def start(cls, url: str, rows: int, rate: float, sample: float) -> Loaded:
        app = App(url, functools.partial(operation, rows), rate).start()
        return cls(app, LockSampler(url, sample, also=("migrator%",)).start())

    def finish(self) -> list[Op]:
        ops = self.app.finish()
        self.sampler.stop()
        return ops


def settle(seconds: float) -> None:
    """Idle time for the workload alone before and after a method (its idle figures)."""
    time.sleep(seconds)


def phase_lines(
    label: str, phases: list[tuple[str, float, float]], ops: list[Op], sampler: LockSampler
) -> tuple[float, float]:
    """Print each phase's wall time, the workload in it and its longest lock wait seen in
    pg_locks (what it waited for, and on whom); return the longest operation and the
    longest lock wait (ms) outside the idle windows."""
    print(f"\n{label}")
    print(
        f"  {'phase':<12} {'wall s':>8} {'ops':>7} {'p99 ms':>8} {'longest ms':>11} "
        f"{'errors':>6} {'lock wait ms':>13}"
    )
    worst = worst_wait = 0.0
    notes = []
    for name, start, end in phases:
        s = summary(ops, start, end)
        wait = sampler.longest(start, end)
        wait_ms = wait.seconds * 1000 if wait else 0.0
        if name != "idle":
            worst = max(worst, s.longest_ms)
            worst_wait = max(worst_wait, wait_ms)
        print(
            f"  {name:<12} {end - start:8.1f} {s.count:7d} {s.p99_ms:8.1f} "
            f"{s.longest_ms:11.1f} {s.errors:6d} {wait_ms:13.1f}"
        )
        if wait is not None:
            notes.append(f"  {name}: longest lock wait {wait_ms:.0f} ms: {wait.describe()}")
    print("\n".join(notes))
    print(f"  ({sampler.polls} polls of pg_locks, every {sampler.every * 1000:g} ms)")
    return worst, worst_wait


def run_plain(url: str, args: argparse.Namespace) -> tuple[float, float, float]:
    loaded = Loaded.start(url, args.rows, args.workload_rate, args.sample)
    t0 = time.time()
    settle(args.idle)
    t1 = time.time()
    q(url, "ALTER TABLE users ALTER COLUMN id TYPE bigint")
    t2 = time.time()
    settle(args.idle)
    t3 = time.time()
    ops = loaded.finish()
    phases = [("idle", t0, t1), ("alter", t1, t2), ("after", t2, t3)]
    worst, wait = phase_lines("(a) plain ALTER COLUMN id TYPE bigint", phases, ops, loaded.sampler)
    return worst, wait, t2 - t1


def run_migrator(url: str, args: argparse.Namespace) -> tuple[float, float, float]:
    plan = parse_plan(PLAN, "retype.yaml")
    steps = StepTimes()
    opts = commands.Options(database_url=url, observer=steps)
    # (the verbs' modules load here, not inside the idle window)
    verbs = (
        ("expand", commands.expand),
        ("backfill", commands.backfill),
        ("complete", commands.complete),
    )
    contract = commands.contract
    loaded = Loaded.start(url, args.rows, args.workload_rate, args.sample)
    marks = [("idle", time.time())]
    settle(args.idle)
    for name, verb in verbs:
        marks.append((name, time.time()))
        verb(plan, opts)
        steps.close()
    marks.append(("contract", time.time()))
    before_swap_max = int(q(url, "SELECT max(id) FROM users")[0][0])
    contract(opts)
    steps.close()
    marks.append(("after", time.time()))
    settle(args.idle)
    end = time.time()
    ops = loaded.finish()
    phases = [
        (name, start, marks[i + 1][1] if i + 1 < len(marks) else end)
        for i, (name, start) in enumerate(marks)
    ]
    worst, wait = phase_lines(
        "(b) migrator: expand, backfill, complete, contract", phases, ops, loaded.sampler
    )
    print(
        "\n  steps: seconds, lock retries, the workload's longest lock wait begun in it, "
        "migrator's own longest lock wait (and on whom)"
    )
    for run in steps.steps:
        seen = loaded.sampler.longest(run.started, run.ended)
        own = loaded.sampler.longest(run.started, run.ended, "migrator")
        print(
            f"  {run.name:<48} {run.seconds:8.3f} s {run.retries:3d} "
            f"{seen.seconds * 1000 if seen else 0:8.1f} ms {own.seconds * 1000 if own else 0:8.1f} ms"
        )
        if own is not None and own.seconds > 0.05:
            print(f"      migrator waited {own.describe()}")
    swap_end = marks[-1][1]
    after = sorted(o.value for o in ops if o.value is not None and o.sent >= swap_end)
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
    return worst, wait, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workload-rate", type=float, default=50.0)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of workload alone")
    parser.add_argument(
        "--sample", type=float, default=0.01, help="seconds between polls of pg_locks"
    )
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
        plain_worst, plain_wait, plain_wall = run_plain(url_of("retype_plain"), args)
        q(url, "CHECKPOINT")
        worst, wait, wall = run_migrator(url_of("retype_migrator"), args)
        print(
            f"\nlongest wait: migrator {worst:.0f} ms, plain ALTER {plain_worst:.0f} ms: "
            f"ratio {worst / max(plain_worst, 0.001):.3f} (goal: migrator under 250 ms: "
            f"{'met' if worst < 250 else 'NOT met'})"
        )
        print(
            f"longest lock wait seen in pg_locks: migrator {wait:.0f} ms, plain ALTER "
            f"{plain_wait:.0f} ms (goal: migrator under 250 ms: "
            f"{'met' if wait < 250 else 'NOT met'})"
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
