"""pagila (datasets/pagila, tests/corpus) for the tests and the benchmarks: loaded on a
server, grown to more rows, checksummed table by table, and played on by an
application's two versions while plans/examples/pagila-catalogue.yaml is released.

`load_pagila` loads the schema (pgvector's table and the OWNER statements left out; on
PostgreSQL before 18 with gen_random_uuid() and a STORED generated column) and a small
sample; `grow` adds rows to the tables the release touches. `ReleaseBed` is a server (a lone
primary on loopback that can be stopped and started), a grown pagila template database
with `migrator init` and `migrator check` done, copies of it, and the release's commands.
`AppLoad` runs old- and new-version requests in threads; every value they write is what the row already holds
(or is deleted again), so a release run under load ends with the same rows as one run
without it, and two runs can be compared by `table_checksums`.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pglast
import psycopg
import yaml
from psycopg import sql

from migrator.durations import parse_duration
from tests.support.standby import Pair

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "corpus" / "pagila-schema.sql"
PLAN = ROOT / "plans" / "examples" / "pagila-catalogue.yaml"

# Statements the embedded server cannot run (no pgvector) or that name a role it lacks.
_LEFT_OUT = ("OWNER TO", "film_embedding", "EXTENSION IF NOT EXISTS vector", "EXTENSION vector")

SAMPLE = """
INSERT INTO public.language (language_id, name) VALUES (1, 'English'), (2, 'Italian');
INSERT INTO public.country (country_id, country) VALUES (1, 'Italy'), (2, 'Chile');
INSERT INTO public.city (city_id, city, country_id) VALUES (1, 'Torino', 1), (2, 'Arica', 2);
INSERT INTO public.address (address_id, address, district, city_id, postal_code, phone)
SELECT g, g || ' Via Roma', 'Piemonte', 1 + g % 2,
       CASE WHEN g % 7 = 0 THEN NULL ELSE lpad(g::text, 5, '0') END, '+39 011 ' || g
FROM generate_series(1, 40) g;
INSERT INTO public.film (film_id, title, language_id, rental_duration, rental_rate, length,
                         special_features)
SELECT g, 'Film Number ' || g, 1, 1 + g % 7, 0.99 + g % 3, 60 + g, ARRAY['Trailers']
FROM generate_series(1, 30) g;
INSERT INTO public.category (category_id, name) VALUES (1, 'Drama');
INSERT INTO public.film_category (film_id, category_id) SELECT g, 1 FROM generate_series(1, 30) g;
INSERT INTO public.actor (actor_id, first_name, last_name) VALUES (1, 'Ada', 'Rossi');
INSERT INTO public.film_actor (actor_id, film_id) SELECT 1, g FROM generate_series(1, 30) g;
INSERT INTO public.store (store_id, manager_staff_id, address_id) VALUES (1, 1, 1);
INSERT INTO public.staff (staff_id, first_name, last_name, address_id, store_id, username)
VALUES (1, 'Mia', 'Bianchi', 2, 1, 'mia');
INSERT INTO public.customer (customer_id, store_id, first_name, last_name, email, address_id)
SELECT g, 1, 'Name' || g, 'Surname' || g, 'c' || g || '@example.com', g
FROM generate_series(1, 20) g;
SELECT setval('public.address_address_id_seq', 40), setval('public.film_film_id_seq', 30),
       setval('public.customer_customer_id_seq', 20);
"""


def load_pagila(url: str, version: int = 180000) -> None:
    text = SCHEMA.read_text()
    if version < 180000:
        text = text.replace("DEFAULT uuidv7()", "DEFAULT gen_random_uuid()")
        text = text.replace(") VIRTUAL", ") STORED")
    statements = [s for s in pglast.split(text) if not any(x in s for x in _LEFT_OUT)]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute((";\n".join(statements) + ";").encode())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SAMPLE.encode())


def grow(url: str, rows: int) -> None:
    """``rows`` more addresses, films, customers, inventory items and rentals, with the
    values `AppLoad` writes back (phone '+39 011 <id>', rental_duration 1 + id % 7, ...)."""
    first = 1000
    last = first + rows - 1
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"""
INSERT INTO public.address (address_id, address, district, city_id, postal_code, phone)
SELECT g, g || ' Via Roma', 'Piemonte', 1 + g % 2, lpad(g::text, 5, '0'), '+39 011 ' || g
FROM generate_series({first}, {last}) g;
INSERT INTO public.film (film_id, title, language_id, rental_duration, rental_rate, length,
                         special_features)
SELECT g, 'Film Number ' || g, 1, 1 + g % 7, 0.99 + g % 3, 60 + g % 90, ARRAY['Trailers']
FROM generate_series({first}, {last}) g;
INSERT INTO public.customer (customer_id, store_id, first_name, last_name, email, address_id)
SELECT g, 1, 'Name' || g, 'Surname' || g, 'c' || g || '@example.com', g
FROM generate_series({first}, {last}) g;
INSERT INTO public.inventory (inventory_id, film_id, store_id)
SELECT g, g, 1 FROM generate_series({first}, {last}) g;
INSERT INTO public.rental (rental_id, rental_date, inventory_id, customer_id, return_date,
                           staff_id)
SELECT g, '2026-01-01'::timestamptz + g * interval '1 hour', g, g,
       '2026-01-03'::timestamptz + g * interval '1 hour', 1
FROM generate_series({first}, {last}) g;
SELECT setval('public.address_address_id_seq', {last}), setval('public.film_film_id_seq', {last}),
       setval('public.customer_customer_id_seq', {last});
""".encode()
        )
        conn.execute("VACUUM ANALYZE")


def table_checksums(url: str) -> dict[str, tuple[int, str]]:
    """Every table of the schema ``public``: its row count and an md5 of its rows in
    order, leaving out ``last_update`` (pagila's triggers set it to now() on every
    update, so two runs never agree on it)."""
    out: dict[str, tuple[int, str]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT c.oid::regclass::text, array_agg(a.attname::text ORDER BY a.attnum) "
            "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' "
            "AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> 'last_update' "
            "GROUP BY c.oid ORDER BY 1"
        ).fetchall()
        for table, columns in tables:
            row = sql.SQL("concat_ws('|', {})").format(
                sql.SQL(", ").join(
                    sql.SQL("coalesce({}::text, '<null>')").format(sql.Identifier(c))
                    for c in columns
                )
            )
            query = sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(r, ',' ORDER BY r)), '') "
                "FROM (SELECT {} AS r FROM {}) AS t"
            ).format(row, sql.SQL(table))
            count, digest = conn.execute(query).fetchone()  # type: ignore[misc]
            out[table] = (count, digest)
    return out


# What each version of the application asks, by the key of a row of each table the
# release touches (the grown rows: see `grow`). Writes put back the value the row has.
OLD_VERSION: list[tuple[str, ...]] = [
    ("SELECT id, name, address, phone FROM customer_list WHERE id = %(k)s",),
    ("SELECT address_id, phone, postal_code FROM address WHERE address_id = %(k)s",),
    ("UPDATE address SET phone = '+39 011 ' || address_id WHERE address_id = %(k)s",),
    ("SELECT film_id, title, rental_duration, special_features FROM film WHERE film_id = %(k)s",),
    ("UPDATE film SET rental_duration = 1 + film_id %% 7 WHERE film_id = %(k)s",),
    ("UPDATE customer SET store_id = 1, email = email WHERE customer_id = %(k)s",),
    ("UPDATE rental SET return_date = return_date WHERE rental_id = %(k)s",),
    ("UPDATE staff SET username = username WHERE staff_id = 1",),
    (
        "INSERT INTO address (address, district, city_id, phone) "
        "VALUES ('old', 'd', 1, '+39 old') RETURNING address_id",
        "DELETE FROM address WHERE address_id = %(id)s",
    ),
]
NEW_VERSION: list[tuple[str, ...]] = [
    ("SELECT address_id, phone_number FROM address WHERE address_id = %(k)s",),
    ("UPDATE address SET phone_number = '+39 011 ' || address_id WHERE address_id = %(k)s",),
    ("SELECT id, name, phone FROM customer_list WHERE id = %(k)s",),
    (
        "SELECT slug, loyalty_points FROM film, customer WHERE film_id = %(k)s AND customer_id = %(k)s",
    ),
    ("UPDATE film SET slug = lower(replace(title, ' ', '-')) WHERE film_id = %(k)s",),
    ("UPDATE customer SET loyalty_points = 0 WHERE customer_id = %(k)s",),
    ("SELECT rental_id, return_date FROM rental WHERE rental_id = %(k)s",),
    ("SELECT staff_id, username FROM staff WHERE staff_id = 1",),
    (
        "INSERT INTO address (address, district, city_id, phone_number) "
        "VALUES ('new', 'd', 2, '+56 new') RETURNING address_id",
        "DELETE FROM address WHERE address_id = %(id)s",
    ),
    (
        "INSERT INTO loyalty_event (id, customer_id, points, tier) "
        "VALUES (%(k)s, %(k)s, 1, 'gold') RETURNING id",
        "DELETE FROM loyalty_event WHERE id = %(id)s",
    ),
]


@dataclass
class Request:
    """One application request: when it started and ended (time.monotonic()), its
    version, what it ran, and the error if it failed."""

    version: str
    sql: str
    start: float
    end: float
    error: str | None = None
    connected_at: float = 0.0  # when its connection was opened


@dataclass
class AppLoad:
    """Old- and new-version requests on ``url`` from ``threads`` threads per version,
    each paced at ``rate`` requests a second, for keys in ``keys``. Set ``old`` and
    ``new`` to start or stop a version's traffic (as the switch moves it); every request
    is kept in ``requests``. A request whose connection broke opens a new one for the
    next (as a pool would)."""

    url: str
    keys: tuple[int, int]
    threads: int = 2
    rate: float = 50.0
    old: threading.Event = field(default_factory=threading.Event)
    new: threading.Event = field(default_factory=threading.Event)
    requests: list[Request] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for version, gate, queries in (
            ("old", self.old, OLD_VERSION),
            ("new", self.new, NEW_VERSION),
        ):
            for n in range(self.threads):
                seed = n + 1 + (self.threads if version == "new" else 0)
                worker = threading.Thread(
                    target=self._run, args=(version, gate, queries, seed), daemon=True
                )
                worker.start()
                self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def _run(
        self, version: str, gate: threading.Event, queries: list[tuple[str, ...]], seed: int
    ) -> None:
        pick = random.Random(f"{version}{seed}")
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        connected_at = 0.0
        made = 0  # the ids this thread inserts are its own: seed * 10,000,000 + n
        while not self._stop.is_set():
            if not gate.is_set():
                time.sleep(0.01)
                continue
            statements = pick.choice(queries)
            made += 1
            params: dict[str, object] = {
                "k": pick.randint(*self.keys),
                "u": seed * 10_000_000 + made,
            }
            start = time.monotonic()
            error = None
            try:
                if conn is None or conn.closed or conn.broken:
                    connected_at = time.monotonic()
                    conn = psycopg.connect(
                        self.url,
                        autocommit=True,
                        application_name=f"app {version}",
                        connect_timeout=5,
                    )
                with conn.transaction():
                    for statement in statements:
                        cur = conn.execute(statement, params)
                        if "RETURNING" in statement:
                            params["id"] = cur.fetchone()[0]  # type: ignore[index]
            except psycopg.Error as exc:
                first = (str(exc).strip().splitlines() or [""])[0]
                error = f"{type(exc).__name__}: {first}"
            end = time.monotonic()
            with self._lock:
                self.requests.append(
                    Request(version, statements[0], start, end, error, connected_at)
                )
            time.sleep(max(0.0, 1 / self.rate - (end - start)))
        if conn is not None:
            conn.close()


def latencies(requests: list[Request], keep: Callable[[Request], bool]) -> list[float]:
    """The durations (s) of the requests ``keep`` selects."""
    return [r.end - r.start for r in requests if keep(r)]


def cli(*args: str, url: str) -> list[str]:
    """The command line of a migrator command on ``url``."""
    return [sys.executable, "-m", "migrator", *args, "--database-url", url]


def q(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(query.encode())
        return cur.fetchall() if cur.description else []


class ReleaseBed:
    """A lone primary (pg_stat_statements preloaded, for the contract's condition), a
    pagila template grown by ``rows`` rows with ``setup`` run in it and `migrator init`
    and `migrator check` done (the switch asks for the check; its record is copied with
    the rest), and plans/examples/pagila-catalogue.yaml with a command switch and
    ``batch`` as the backfill's batch_size. `fresh` gives a copy of the template."""

    def __init__(self, rows: int, batch: int, setup: str = "") -> None:
        self.pair = Pair(
            {
                "shared_preload_libraries": "pg_stat_statements",
                # Both sides of a deadlock and every lock wait past deadlock_timeout go to
                # the server log with the session's name: `deadlocks` reads them.
                "log_line_prefix": "%m [%p] %a: ",
                "log_lock_waits": "on",
            },
            standby=False,
        )
        self.folder = Path(tempfile.mkdtemp(prefix="migrator-pagila-"))
        self.rows = rows
        try:
            plan = yaml.safe_load(PLAN.read_text())
            self.lock_timeout = parse_duration(str(plan["database"]["lock_timeout"]))
            self.lb = self.folder / "lb"
            plan["backfill"] = {**plan.get("backfill", {}), "batch_size": batch}
            plan["switch"] = {
                "command": {
                    "to_green": f"echo {{percent}} > {self.lb}",
                    "to_blue": f"echo 0 > {self.lb}",
                    "status": f"cat {self.lb}",
                },
                "watch": {"duration": 0, "interval": 1},
            }
            self.plan = self.folder / "pagila.yaml"
            self.plan.write_text(yaml.safe_dump(plan, sort_keys=False))
            self.commands: list[tuple[str, ...]] = [
                ("expand", str(self.plan)),
                ("backfill", str(self.plan)),
                ("switch", str(self.plan)),
                ("complete", str(self.plan)),
                ("contract",),
            ]
            self.template = self._template(setup)
        except BaseException:
            self.stop()
            raise
        self.n = 0

    @property
    def keys(self) -> tuple[int, int]:
        """The keys of the grown rows (`grow`), for `AppLoad`."""
        return (1000, 1000 + self.rows - 1)

    def _template(self, setup: str) -> str:
        url, _ = self.pair.create_database("pagila_template")
        version = int(str(q(url, "SHOW server_version_num")[0][0]))
        load_pagila(url, version)
        grow(url, self.rows)
        q(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if setup:
            q(url, setup)
        for args in (("init",), ("check", str(self.plan))):
            done = subprocess.run(cli(*args, url=url), capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f"migrator {args[0]}: {done.stdout}{done.stderr}")
        return "pagila_template"

    def fresh(self) -> str:
        """A new copy of the template; its URL."""
        self.n += 1
        name = f"pagila_run_{self.n}"
        with psycopg.connect(self.pair.primary_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(self.template)
                )
            )
        self.lb.write_text("0\n")
        url = self.pair.primary_url.rsplit("/", 1)[0] + f"/{name}"
        # A copy's sequences hold the template's pre-logged values (log_cnt) with no WAL
        # of their own: after a crash (bench/faults.py's restart) they would go back and
        # hand out ids again (migrator.events: duplicate key). setval logs where each is.
        q(
            url,
            "DO $$DECLARE s regclass; BEGIN FOR s IN SELECT oid FROM pg_class "
            "WHERE relkind = 'S' LOOP PERFORM setval(s, nextval(s)); END LOOP; END $$",
        )
        return url

    def deadlocks(self) -> list[str]:
        """Each deadlock the server logged so far: who detected it (its application_name),
        the statement it was aborted in, and PostgreSQL's DETAIL naming both sides."""
        log = self.pair.folder / "primary.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        out: list[str] = []
        for n, line in enumerate(lines):
            if "ERROR:  deadlock detected" not in line:
                continue
            report = [line]
            for follow in lines[n + 1 : n + 12]:
                if follow.startswith(("\t", " ")) or any(
                    k in follow for k in ("DETAIL:", "HINT:", "CONTEXT:", "STATEMENT:")
                ):
                    report.append(follow)
                else:
                    break
            out.append("\n".join(report))
        return out

    def drop(self, url: str) -> None:
        name = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
        with psycopg.connect(self.pair.primary_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        self.pair.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
