"""Benchmark `migrator check`: 1,000 queries per version over the 3 phases, on pagila.

Prints the total time of one `check` as CI runs it (the embedded PostgreSQL's start, the
pagila baseline, the three phase databases, the matrix of 6 cells, the lint), the time
per query, and, measured in the same run on the same phase databases, the matrix beside
a bare PREPARE loop (psycopg, one connection per phase, no migrator code) as a ratio.
The first check runs on an empty cache (it initdb's the data directory it keeps), the
second makes the cached copy that holds the baseline, the third, timed as "total", runs
as every later one on a machine with the same baseline.

    .venv/bin/python bench/check.py [--queries 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from migrator.commands.check import CheckOptions, CommandPhases, check
from migrator.db.embedded import embedded
from migrator.plan.loader import load_plan
from migrator.verify.matrix import CELLS, run_matrix
from migrator.verify.phase_schemas import phase_databases
from migrator.verify.queries import load_query_set
from migrator.verify.scratch import ScratchServer
from migrator.verify.static import column_changes

ROOT = Path(__file__).resolve().parent.parent
PAGILA = ROOT / "tests" / "corpus" / "pagila-schema.sql"

PLAN = f"""\
release: bench-phone
baseline: {PAGILA}
versions:
  old: {{name: v1, queries: old/}}
  new: {{name: v2, queries: new/}}
expand:
  - add_column:
      table: customer
      column: {{name: phone, type: text}}
      up: "''"
      final: {{nullable: false}}
  - rename_column: {{table: staff, from: email, to: contact_email}}
  - create_index: {{table: rental, name: rental_return_date_idx, columns: [return_date]}}
"""

# Queries as pagila's users write them; {i} varies each copy, so no two are the same text.
COMMON = [
    "SELECT film_id, title, rental_rate FROM film WHERE rating = $1::mpaa_rating "
    "ORDER BY title LIMIT {i}",
    "SELECT f.title, count(*) FROM rental r JOIN inventory i USING (inventory_id) "
    "JOIN film f USING (film_id) WHERE r.rental_date > now() - interval '{i} days' "
    "GROUP BY f.title ORDER BY 2 DESC LIMIT 10",
    "SELECT a.first_name, a.last_name FROM actor a JOIN film_actor fa USING (actor_id) "
    "WHERE fa.film_id = %(film_id)s AND a.actor_id > {i}",
    "UPDATE inventory SET last_update = now() WHERE inventory_id = :id AND store_id = {i}",
    "SELECT sum(amount) FROM payment WHERE customer_id = $1 AND amount > {i}",
    "INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) "
    "VALUES (now(), $1, $2, {i}) RETURNING rental_id",
    "DELETE FROM film_category WHERE film_id = $1 AND category_id = {i}",
    "WITH late AS (SELECT rental_id FROM rental WHERE return_date IS NULL AND "
    "rental_date < now() - interval '{i} days') SELECT count(*) FROM late",
]
OLD = [
    *COMMON,
    "SELECT customer_id, first_name, last_name, email FROM customer "
    "WHERE store_id = $1 AND customer_id > {i}",
    "INSERT INTO customer (store_id, first_name, last_name, email, address_id) "
    "VALUES ($1, $2, $3, $4, {i})",
    "SELECT staff_id, email FROM staff WHERE store_id = {i}",
    "UPDATE staff SET email = $2 WHERE staff_id = $1 AND store_id = {i}",
]
NEW = [
    *COMMON,
    "SELECT customer_id, first_name, last_name, phone FROM customer "
    "WHERE store_id = $1 AND customer_id > {i}",
    "INSERT INTO customer (store_id, first_name, last_name, email, address_id, phone) "
    "VALUES ($1, $2, $3, $4, {i}, $5)",
    "SELECT staff_id, contact_email FROM staff WHERE store_id = {i}",
    "UPDATE staff SET contact_email = $2 WHERE staff_id = $1 AND store_id = {i}",
]


def write_queries(folder: Path, templates: list[str], count: int) -> None:
    """``count`` queries in files of 100, as a team's query folder would hold them."""
    folder.mkdir(parents=True)
    per_file = 100
    for start in range(0, count, per_file):
        lines = [
            templates[n % len(templates)].format(i=n) + ";"
            for n in range(start, min(count, start + per_file))
        ]
        (folder / f"queries_{start // per_file:03d}.sql").write_text("\n".join(lines) + "\n")


def bare_prepare_loop(urls: dict[str, str], statements: dict[str, list[str]]) -> float:
    """The baseline: PREPARE every statement of every cell, psycopg only, as fast as it goes."""
    started = time.perf_counter()
    for phase, url in urls.items():
        with psycopg.connect(url) as conn:
            for spec in CELLS:
                if spec.phase != phase:
                    continue
                for n, sql in enumerate(statements[spec.version]):
                    try:
                        conn.execute(f"PREPARE b_{spec.version}_{n} AS {sql}".encode())
                    except psycopg.Error:
                        conn.rollback()
                conn.rollback()
                conn.execute("DEALLOCATE ALL")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000, help="queries per version")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="migrator-bench-check-") as tmp:
        folder = Path(tmp)
        write_queries(folder / "old", OLD, args.queries)
        write_queries(folder / "new", NEW, args.queries)
        plan_path = folder / "plan.yaml"
        plan_path.write_text(PLAN)
        plan = load_plan(plan_path)

        # 1. check as CI runs it: the embedded server's start included; first with an
        # empty cache (the first run on a machine: initdb), then the second (it caches
        # the data directory with the baseline loaded), then as every later run.
        cache = folder / "cache"
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            report = check(plan, plan_path, CheckOptions(cache_dir=cache))
            runs.append(time.perf_counter() - started)
            # check returns before its server has gone (the CLI shows the report
            # meanwhile, and waits for it before it exits): that wait, apart.
            stopping = time.perf_counter()
            for thread in threading.enumerate():
                if thread.name == "migrator-pg-stop":
                    thread.join()
            stop_after = time.perf_counter() - stopping
        cold, second, total = runs
        statements = sum(len(c.results) for c in report.cells)
        errors = [f.summary() for f in report.findings if f.severity == "error"]

        # 2. the matrix beside a bare PREPARE loop, on the same phase databases.
        versions = {
            "old": ("v1", load_query_set(folder / "old")),
            "new": ("v2", load_query_set(folder / "new")),
        }
        sqls = {k: [q.sql for q in v[1]] for k, v in versions.items()}
        with embedded() as server:
            scratch = ScratchServer(server.url)
            scratch.make_disposable()
            with phase_databases(plan, plan_path, scratch, CommandPhases()) as dbs:
                bare_prepare_loop(dbs.urls, sqls)  # warm the caches for both
                t = time.perf_counter()
                run_matrix(dbs.urls, versions, column_changes(plan), ("public",))
                matrix = time.perf_counter() - t
                bare = bare_prepare_loop(dbs.urls, sqls)

    queries = 2 * args.queries
    print(f"migrator check: {args.queries} queries per version, 3 phases, 6 cells")
    print(
        f"  result:                {'passed' if not report.failed else 'FAILED'}"
        f" ({len(errors)} errors)"
    )
    for line in errors[:5]:
        print(f"    {line}")
    print(f"  total, first run (empty cache: initdb): {cold:8.2f} s")
    print(f"  total, second run (caches the baseline): {second:8.2f} s")
    print(f"  total (embedded start included): {total:8.2f} s   (target < 10 s)")
    stages = ", ".join(f"{k} {v:.2f}" for k, v in report.timings.items())
    print(f"    stages (s): {stages}")
    print(f"    then the server's stop, after check returned: {stop_after:.3f} s")
    print(f"  per query ({queries} queries):       {1000 * total / queries:8.3f} ms")
    print(f"  per statement checked ({statements}): {1000 * total / statements:8.3f} ms")
    print(
        f"  matrix (PREPARE + static checks):  {matrix:8.2f} s"
        f"   {1e6 * matrix / statements:7.1f} us/statement"
    )
    print(
        f"  baseline, bare PREPARE loop:       {bare:8.2f} s"
        f"   {1e6 * bare / statements:7.1f} us/statement"
    )
    print(f"  ratio matrix / bare PREPARE:       {matrix / bare:8.2f}x")
    print(f"  ratio whole check / bare PREPARE:  {total / bare:8.2f}x   (goal <= 1.3x)")
    print(f"  ratio first run / bare PREPARE:    {cold / bare:8.2f}x")
    print(f"  ratio second run / bare PREPARE:   {second / bare:8.2f}x")


if __name__ == "__main__":
    main()
