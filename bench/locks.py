"""Benchmark: the longest lock wait an application statement sees during the pagila release.

    python bench/locks.py                    # 20,000 grown rows a table
    python bench/locks.py --rows 2000 --rate 20

plans/examples/pagila-catalogue.yaml (tests/support/pagila.ReleaseBed: a command switch
and --batch as the backfill's batch_size added) is released by the CLI, one process a
command (expand, backfill, switch, complete, contract), while an application reads and
writes every table the release touches (tests/support/pagila.AppLoad: address, film,
customer, rental, staff, loyalty_event; old-version requests until the switch is done,
new-version ones from the end of the expand on).

A sampler (bench/_workload.py) polls pg_locks every --sample seconds for the
application's sessions waiting on a lock (``clock_timestamp() - waitstart``, with the
mode, the relation and the blocking sessions' statements; a wait shorter than a poll can
be missed) and the
statement latencies are timed by the application itself (they include any wait, so they
bound it from above). For each command it prints the longest wait seen, the longest
statement and its 99th percentile, beside the plan's lock_timeout; the goal is that no
application statement waits longer than 250 ms at any moment of the release.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _workload import LockSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.pagila import AppLoad, ReleaseBed, cli

GOAL = 0.250


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows grown in each table")
    parser.add_argument("--batch", type=int, default=500, help="the backfill's batch_size")
    parser.add_argument("--rate", type=float, default=50, help="requests/s per app thread")
    parser.add_argument("--threads", type=int, default=2, help="app threads per version")
    parser.add_argument("--sample", type=float, default=0.01, help="seconds between polls")
    args = parser.parse_args(argv)
    started = time.monotonic()
    bed = ReleaseBed(args.rows, args.batch)
    try:
        url = bed.fresh()
        load = AppLoad(url, bed.keys, threads=args.threads, rate=args.rate)
        sampler = LockSampler(url, args.sample, application="app %", clock=time.monotonic)
        load.old.set()
        load.start()
        sampler.start()
        time.sleep(2)  # the load alone first, as the baseline row
        windows = [("(load alone)", time.monotonic() - 2, time.monotonic(), 0)]
        for command in bed.commands:
            start = time.monotonic()
            done = subprocess.run(cli(*command, url=url), capture_output=True, text=True)
            windows.append((command[0], start, time.monotonic(), done.returncode))
            if done.returncode != 0:
                print(f"{command[0]} failed: {done.stderr.strip()}")
                break
            if command[0] == "expand":
                load.new.set()
            if command[0] == "switch":
                load.old.clear()
        sampler.stop()
        load.stop()
        deadlocks = bed.deadlocks()
    finally:
        bed.stop()
    print(
        f"pagila release, {args.rows} rows grown per table, batch_size {args.batch}; "
        f"{2 * args.threads} app threads at {args.rate:g} requests/s each; "
        f"lock waits polled every {args.sample * 1000:g} ms ({sampler.polls} polls)"
    )
    header = (
        f"{'phase':14} {'seconds':>8} {'lock_timeout':>12} {'longest lock wait':>18} "
        f"{'longest stmt':>13} {'p99 stmt':>9} {'requests':>9} {'failed':>7}"
    )
    print(header)
    worst = 0.0
    worst_what = ""
    for name, start, end, code in windows:
        inside = [r for r in load.requests if start <= r.start <= end]
        lat = sorted(r.end - r.start for r in inside)
        p99 = lat[int(0.99 * (len(lat) - 1))] if lat else 0.0
        seen = sampler.longest(start, end)
        wait, what = (seen.seconds, seen.describe()) if seen else (0.0, "")
        if name != "(load alone)" and max(wait, lat[-1] if lat else 0.0) > worst:
            worst = max(wait, lat[-1] if lat else 0.0)
            worst_what = what
        print(
            f"{name:14} {end - start:8.1f} {bed.lock_timeout * 1000:10.0f}ms "
            f"{wait * 1000:16.0f}ms {(lat[-1] if lat else 0) * 1000:11.0f}ms "
            f"{p99 * 1000:7.0f}ms {len(inside):9} "
            f"{sum(1 for r in inside if r.error):7}" + ("" if code == 0 else f"  exit {code}")
        )
        if wait > GOAL and what:
            print(f"{'':14} waited on {what}")
    every = [r.end - r.start for r in load.requests]
    print(
        f"all requests: {len(every)}, median {statistics.median(every) * 1000:.1f} ms; "
        f"longest wait or statement during the release {worst * 1000:.0f} ms "
        f"(goal {GOAL * 1000:.0f} ms: {'met' if worst <= GOAL else 'NOT met'})"
    )
    if worst_what:
        print(f"the longest lock wait seen was for {worst_what}")
    errors = Counter(f"{r.version} {r.error}"[:200] for r in load.requests if r.error)
    for error, count in errors.most_common():
        print(f"failed: {count} x {error}")
    print(f"deadlocks in the server log: {len(deadlocks)}")
    for report in deadlocks:
        print("  " + report.replace("\n", "\n  "))
    print(f"bench time: {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
