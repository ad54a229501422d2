"""The demo: the release of BACKGROUND.md on an embedded PostgreSQL, start to finish.

It seeds a users table the way v1 left it, starts v1 (blue) and v2 (green) of a small
users service behind a front (nginx where installed, else a Python proxy moved by the
command backend), keeps a load running through the front, and takes the example plan
through expand, check, switch, backfill, complete and contract. It ends with the counts:
requests served, requests failed (0), rows backfilled, and the column NOT NULL.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import text

from migrator import commands
from migrator.commands.check import CheckOptions, check
from migrator.db.connection import connect, make_engine
from migrator.db.embedded import embedded
from migrator.demo.front import Front, free_port, start_front
from migrator.demo.traffic import Load, LoadStats
from migrator.errors import FindingsError
from migrator.observer import NULL_OBSERVER, Observer
from migrator.plan.loader import parse_plan
from migrator.plan.models import Plan

PLAN = Path(__file__).with_name("2026-11-add-phone.yaml")

BASELINE = Path(__file__).with_name("baseline.sql")

# The users table as v1 left it (the plan's baseline), with rows in it.
SEED = """
INSERT INTO users (name, email, legacy_phone)
SELECT 'user ' || g, 'user' || g || '@example.com',
       CASE WHEN g % 10 = 0 THEN NULL ELSE '+1-555-' || lpad(g::text, 7, '0') END
FROM generate_series(1, {rows}) AS g;
"""


@dataclass
class App:
    """One version of the service, running in its own process."""

    version: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Retire this version: its process and its database connections go."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Environment:
    """The database, blue and green, the front and the load, for one demo run."""

    database_url: str
    folder: Path
    rows: int
    blue: App
    green: App
    front: Front
    load: Load
    plan_path: Path

    def plan(self) -> Plan:
        """The example plan with a switch section for this front."""
        return parse_plan(self.plan_path.read_text(), str(self.plan_path))


def start_app(version: str, database_url: str) -> App:
    """Start one version and wait until it answers.

    It waits for the event (the app answers, or its process ends), not for a timer: on a
    busy machine an app's start-up can take many seconds. A process that ends (its port
    taken between free_port and its bind, say) is started again on another port."""
    last = "no output"
    for _attempt in range(3):
        port = free_port()
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "migrator.demo.app",
                    "--version",
                    version,
                    "--port",
                    str(port),
                    "--database-url",
                    database_url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            app = App(version, port, process)
            # A ceiling only for an app that hangs without answering or ending.
            deadline = time.monotonic() + 300
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    httpx.get(f"{app.url}/users/1", timeout=1)
                    return app
                except httpx.HTTPError:
                    time.sleep(0.05)
            app.stop()
            errors.seek(0)
            lines = errors.read().decode(errors="replace").strip().splitlines()
            last = lines[-1] if lines else f"exit {process.returncode}"
    raise RuntimeError(f"the {version} app did not start: {last}")


def write_plan(folder: Path, front: Front, green: App) -> Path:
    """The example plan, with a switch section for this front, next to its query sets."""
    data = yaml.safe_load(PLAN.read_text())
    data["switch"] = {
        **front.switch,
        "steps": [50, 100],
        "smoke": [
            {
                "http": {
                    "url": f"{green.url}/healthz",
                    "expect_status": 200,
                    "timeout": "2s",
                    "retries": 3,
                }
            }
        ],
        "watch": {
            "duration": "2s",
            "interval": "500ms",
            "probes": [
                {"http": {"url": f"http://127.0.0.1:{front.port}/healthz", "expect_status": 200}}
            ],
        },
    }
    for version in ("old", "new"):
        queries = PLAN.parent / data["versions"][version]["queries"]
        data["versions"][version]["queries"] = str(queries)
    data["baseline"] = str(BASELINE)
    path = folder / PLAN.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextmanager
def environment(
    *, rows: int = 20_000, database_url: str | None = None, prefer_nginx: bool = True
) -> Iterator[Environment]:
    """Start everything the demo needs; stop it all on the way out."""
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="migrator-demo-")))
        if database_url is None:
            database_url = stack.enter_context(embedded(folder / "pg")).url
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        with connect(engine) as conn, conn.begin():
            cursor = conn.connection.cursor()
            cursor.execute(BASELINE.read_text())
            cursor.execute(SEED.format(rows=int(rows)))
        blue = start_app("v1", database_url)
        stack.callback(blue.stop)
        green = start_app("v2", database_url)
        stack.callback(green.stop)
        front = start_front(folder, blue.port, green.port, prefer_nginx=prefer_nginx)
        stack.callback(front.stop)
        load = Load(front.port, rows).start()
        stack.callback(load.stop)
        plan_path = write_plan(folder, front, green)
        yield Environment(database_url, folder, rows, blue, green, front, load, plan_path)


@dataclass
class DemoResult:
    """What the demo ends with."""

    front: str
    rows: int
    rows_backfilled: int
    rows_without_phone: int
    phone_not_null: bool
    requests_served: int
    requests_failed: int
    served_by: dict[str, int]
    failures: list[str]
    # v2's /stats, gated on migrator.release_phase(): before and after the backfill.
    v2_stats_before_backfill: dict[str, Any]
    v2_stats_after_backfill: dict[str, Any]


def run(
    *, rows: int = 20_000, observer: Observer = NULL_OBSERVER, prefer_nginx: bool = True
) -> DemoResult:
    """Run the demo release on a fresh embedded PostgreSQL."""
    observer.info("starting an embedded PostgreSQL, v1 (blue), v2 (green) and the front ...")
    with environment(rows=rows, prefer_nginx=prefer_nginx) as env:
        observer.info(
            f"seeded users with {rows} rows; front: {env.front.kind} on 127.0.0.1:"
            f"{env.front.port}; load running through it"
        )
        plan = env.plan()
        opts = commands.Options(database_url=env.database_url, observer=observer, actor="demo")

        observer.info("\n[1/6] check: v1's and v2's queries on the schema of every phase")
        report = check(
            plan,
            env.plan_path,
            CheckOptions(database_url=env.database_url, observer=observer, actor="demo"),
        )
        if report.failed:
            raise FindingsError(f"check found {report.counts()['error']} problem(s)")

        observer.info("\n[2/6] expand: add users.phone (nullable) and its sync trigger")
        commands.expand(plan, opts)

        observer.info("\n[3/6] switch: smoke-test green, move traffic 50% then 100%, watch")
        commands.switch(plan, opts)

        observer.info("\n[4/6] backfill: fill phone for the rows already there")
        before = httpx.get(f"{env.green.url}/stats", timeout=5).json()
        result = commands.backfill(plan, opts)
        after = httpx.get(f"{env.green.url}/stats", timeout=5).json()
        observer.info(
            f"v2's /stats asks migrator.release_phase(): {before.get('pending')} pending "
            f"before the backfill, {after.get('phones')} phones after it"
        )

        observer.info("\n[5/6] complete: v1 is retired; the contract is scheduled")
        commands.complete(plan, opts)
        env.blue.stop()

        observer.info("\n[6/6] contract: SET NOT NULL the safe way, drop the trigger")
        commands.contract(opts)

        time.sleep(0.5)  # a little more traffic on the contracted schema
        stats: LoadStats = env.load.stop()
        engine = make_engine(env.database_url)
        try:
            with connect(engine) as conn:
                total = conn.execute(text("SELECT count(*) FROM users")).scalar_one()
                missing = conn.execute(
                    text("SELECT count(*) FROM users WHERE phone IS NULL")
                ).scalar_one()
                not_null = conn.execute(
                    text(
                        "SELECT attnotnull FROM pg_attribute "
                        "WHERE attrelid = 'users'::regclass AND attname = 'phone'"
                    )
                ).scalar_one()
        finally:
            engine.dispose()
        return DemoResult(
            front=env.front.kind,
            rows=int(total),
            rows_backfilled=result.rows,
            rows_without_phone=int(missing),
            phone_not_null=bool(not_null),
            requests_served=stats.served,
            requests_failed=stats.failed,
            served_by=dict(stats.by_version),
            failures=stats.failures,
            v2_stats_before_backfill=before,
            v2_stats_after_backfill=after,
        )
