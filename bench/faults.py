"""Benchmark: the pagila release with a fault at a random moment, N times; what is left.

    python bench/faults.py                         # 20 faults, 20,000 grown rows a table
    python bench/faults.py --faults 4 --rows 300   # the short version the suite runs

plans/examples/pagila-catalogue.yaml (every operation kind, the backfill included; a
command switch and a batch size added) is released by the CLI, one process a command:
expand, backfill, switch, complete, contract, on a copy of a pagila database (grown by
--rows rows in each table the release touches, `migrator init` done). Meanwhile an
application plays on it (tests/support/pagila.AppLoad): old-version requests until the
switch is done, new-version ones from the end of the expand on.

First one undisturbed run, then --faults runs, each with one fault at a random moment of
the release (uniform over the undisturbed run's time: a command, and a time into it;
where that command ends sooner, the fault comes early in the next one), in turn:

  kill-9     the migrator process gets SIGKILL;
  terminate  pg_terminate_backend() of every connection of migrator's;
  restart    PostgreSQL stopped with -m immediate, started again --down seconds later;
  lock       another session holds a lock on a table of the release (ACCESS SHARE, as a
             long read does) for 2.5 times the plan's lock_timeout.

After a fault the same command is run again until it exits 0 (at most 5 times), then
the release goes on. Each run is then held against the undisturbed one: the row
checksums of every table (tests/support/pagila.table_checksums), pg_dump --schema-only
(tests/support/catalog_snapshot), and the DDL every step ran, logged by an event trigger
in the step's own transaction (a step that ran twice would log twice; a rolled-back
attempt logs nothing). "resumed exact" is all three equal and every command done.
Failed application requests are counted apart for the moments the database was down
(from the stop to the start, and a request on a connection opened before the stop).

The server, the template and the plan are tests/support/pagila.ReleaseBed's (a lone
primary on loopback, tests/support/standby.Pair, that can be stopped and started on its
port).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.catalog_snapshot import diff, schema_dump
from tests.support.pagila import AppLoad, ReleaseBed, cli, q, table_checksums

KINDS = ("kill-9", "terminate", "restart", "lock")
TABLES = ("address", "film", "customer", "rental", "staff")
RERUNS = 5

# Every DDL command a step runs, in the step's transaction (bench schema, not the app's).
DDL_LOG = """
CREATE SCHEMA bench;
CREATE TABLE bench.ddl_log (tag text, identity text);
CREATE FUNCTION bench.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO bench.ddl_log
    SELECT command_tag, object_identity FROM pg_event_trigger_ddl_commands()
    WHERE schema_name IS DISTINCT FROM 'migrator' AND schema_name IS DISTINCT FROM 'pg_temp'
      AND object_identity NOT LIKE 'pg_temp%';
END $$;
CREATE EVENT TRIGGER bench_log_ddl ON ddl_command_end EXECUTE FUNCTION bench.log_ddl();
"""


@dataclass
class Fault:
    kind: str
    target: int  # the index of the command it comes in
    at: float  # seconds into that command
    rearmed: bool = False  # that command ended first: it came early in the next
    command: str = ""
    landed: str = ""  # what was under way when it came
    reruns: int = 0
    codes: list[int] = field(default_factory=list)


@dataclass
class Run:
    """One release: per command its seconds; the application's requests; the windows
    the database was down; what it ended with."""

    seconds: dict[str, float] = field(default_factory=dict)
    done: bool = True
    down: list[tuple[float, float]] = field(default_factory=list)
    failed_up: int = 0
    failed_down: int = 0
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    checksums: dict[str, tuple[int, str]] = field(default_factory=dict)
    schema: str = ""
    ddl: Counter[tuple[str, str]] = field(default_factory=Counter)
    said: list[str] = field(default_factory=list)  # what failed commands said


class Bench(ReleaseBed):
    def __init__(self, rows: int, down: float, rate: float, batch: int) -> None:
        super().__init__(rows, batch, setup=DDL_LOG)
        self.base: dict[str, float] = {}  # the undisturbed run's seconds per command
        self.down = down
        self.rate = rate

    # -- one release -------------------------------------------------------------------

    def release(self, fault: Fault | None) -> Run:
        url = self.fresh()
        run = Run()
        load = AppLoad(url, self.keys, rate=self.rate)
        load.old.set()
        load.start()
        begun = time.monotonic()
        try:
            for index, args in enumerate(self.commands):
                start = time.monotonic()
                armed = fault if fault and not fault.command and index >= fault.target else None
                if armed is not None and index > armed.target:
                    armed.rearmed = True
                    armed.at = random.uniform(0.05, 0.5) * self.base.get(args[0], 1.0)
                code = self._command(args, url, armed, start, run)
                attempts = 0
                while code != 0 and attempts < RERUNS:
                    attempts += 1
                    if fault:
                        fault.reruns += 1
                    code = self._command(args, url, None, begun, run)
                if fault and fault.command == args[0]:
                    fault.codes.append(code)
                run.seconds[args[0]] = time.monotonic() - start
                if code != 0:
                    run.done = False
                    break
                if args[0] == "expand":
                    load.new.set()
                if args[0] == "switch":
                    load.old.clear()
        finally:
            load.stop()
        for r in load.requests:
            run.requests += 1
            if r.error is None:
                continue
            run.errors[r.error.split(":")[0]] += 1
            if any(
                r.start <= b and r.end >= a or r.connected_at <= a <= r.start for a, b in run.down
            ):
                run.failed_down += 1
            else:
                run.failed_up += 1
                run.errors[f"up: {r.version} {r.error}"[:160]] += 1
        run.checksums = table_checksums(url)
        run.schema = schema_dump(url)
        run.ddl = Counter(
            (str(t), str(i)) for t, i in q(url, "SELECT tag, identity FROM bench.ddl_log")
        )
        self.drop(url)
        return run

    def _command(
        self, args: tuple[str, ...], url: str, fault: Fault | None, begun: float, run: Run
    ) -> int:
        proc = subprocess.Popen(
            cli(*args, url=url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if fault is not None:
            ends_by = begun + fault.at
            while proc.poll() is None and time.monotonic() < ends_by:
                time.sleep(0.01)
            if proc.poll() is None:
                fault.command = args[0]
                fault.landed = self._under_way(url)
                self._inject(fault.kind, url, proc, run)
        try:
            _, err = proc.communicate(timeout=1800)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            run.said.append(f"{args[0]}: exit {proc.returncode}: {err.strip()[-600:]}")
        if proc.returncode not in (0, -9) and fault is not None and fault.command == args[0]:
            fault.landed += f"; exit {proc.returncode}: {(err.strip().splitlines() or [''])[-1]}"
        return proc.returncode

    @staticmethod
    def _under_way(url: str) -> str:
        try:
            rows = q(url, "SELECT phase, key FROM migrator.steps WHERE status = 'running'")
        except psycopg.Error:
            return "?"
        return ", ".join(f"{p} {k}" for p, k in rows) or "between steps"

    def _inject(self, kind: str, url: str, proc: subprocess.Popen[str], run: Run) -> None:
        if kind == "kill-9":
            proc.kill()
        elif kind == "terminate":
            q(
                url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'migrator%' AND pid <> pg_backend_pid()",
            )
        elif kind == "restart":
            down = time.monotonic()
            self.pair.stop_primary("immediate")
            time.sleep(self.down)
            self.pair.start_primary()
            run.down.append((down, time.monotonic()))
        elif kind == "lock":
            table = random.choice(TABLES)
            ready = threading.Event()

            def hold() -> None:
                with psycopg.connect(url, application_name="bench lock holder") as conn:
                    conn.execute(
                        sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(sql.Identifier(table))
                    )
                    ready.set()
                    time.sleep(self.lock_timeout * 2.5)
                    conn.rollback()

            holder = threading.Thread(target=hold, daemon=True)
            holder.start()
            ready.wait(30)
            holder.join(timeout=self.lock_timeout * 2.5 + 60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=20)
    parser.add_argument("--rows", type=int, default=20_000, help="rows grown in each table")
    parser.add_argument("--batch", type=int, default=500, help="the backfill's batch_size")
    parser.add_argument("--rate", type=float, default=20, help="requests/s per app thread")
    parser.add_argument("--down", type=float, default=1.0, help="seconds PostgreSQL is down")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"the faults to take in turn ({', '.join(KINDS)})"
    )
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--kinds: one or more of {', '.join(KINDS)}")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    random.seed(seed)
    started = time.monotonic()
    bench = Bench(args.rows, args.down, args.rate, args.batch)
    try:
        print(
            f"pagila release, {args.rows} rows grown per table, batch_size {args.batch}, "
            f"lock_timeout {bench.lock_timeout:g}s, seed {seed}",
            flush=True,
        )
        base = bench.release(None)
        if not base.done or base.said:
            print("the undisturbed release failed:\n" + "\n".join(base.said))
            return 2
        total = sum(base.seconds.values())
        bench.base = base.seconds
        print(
            "undisturbed: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in base.seconds.items())
            + f"; {base.requests} requests, {base.failed_up} failed",
            flush=True,
        )
        for error, count in base.errors.items():
            if error.startswith("up: "):
                print(f"     {count} x {error}")
        exact = 0
        failed_up = failed_down = requests = 0
        twice_total = 0
        for i in range(args.faults):
            # A moment of the undisturbed release's time, uniform: the command it falls
            # in, and how far into that command.
            moment = rng.uniform(0.02, 0.98) * total
            seconds = list(base.seconds.values())
            target = 0
            while target < len(seconds) - 1 and moment >= seconds[target]:
                moment -= seconds[target]
                target += 1
            fault = Fault(kinds[i % len(kinds)], target, moment)
            run = bench.release(fault)
            sums = run.checksums == base.checksums
            schema = run.schema == base.schema
            twice = sorted((run.ddl - base.ddl).elements())
            missing = sorted((base.ddl - run.ddl).elements())
            ok = run.done and sums and schema and not twice and not missing
            exact += ok
            twice_total += len(twice)
            failed_up += run.failed_up
            failed_down += run.failed_down
            requests += run.requests
            print(
                f"{i + 1:2}/{args.faults} {fault.kind:9} {fault.at:5.1f}s into "
                f"{fault.command or '(no command: the release had ended)'}"
                f"{' (its planned command ended first)' if fault.rearmed else ''} "
                f"[{fault.landed}]: "
                f"reruns {fault.reruns}, {'exact' if ok else 'NOT EXACT'}; requests "
                f"{run.requests}, failed {run.failed_up} up / {run.failed_down} down",
                flush=True,
            )
            if not ok:
                if not sums:
                    bad = [t for t in base.checksums if run.checksums.get(t) != base.checksums[t]]
                    print(f"     checksums differ: {', '.join(bad)}")
                if not schema:
                    print("     schema differs:\n" + diff(base.schema, run.schema)[:2000])
                if twice or missing:
                    print(f"     DDL run more: {twice[:10]}; less: {missing[:10]}")
                if not run.done:
                    print("     the release did not finish:\n" + "\n".join(run.said))
            for error, count in run.errors.items():
                if error.startswith("up: "):
                    print(f"     {count} x {error}")
            for said in run.said:
                print(f"     {said.splitlines()[-1][:300] if said.strip() else said}")
        print()
        print(f"resumed exact:                 {exact}/{args.faults}")
        print(
            f"row checksums, schema, DDL:    held against the undisturbed run ({len(base.checksums)} tables)"
        )
        print(f"steps run twice:               {twice_total}")
        print(f"failed requests, database up:  {failed_up} of {requests}")
        print(f"failed requests, database down (restart faults): {failed_down}")
        deadlocks = bench.deadlocks()
        print(f"deadlocks in the server log:   {len(deadlocks)}")
        for report in deadlocks:
            print("     " + report.replace("\n", "\n     "))
        print(f"bench time:                    {time.monotonic() - started:.0f}s")
        return 0 if exact == args.faults and failed_up == 0 else 1
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
