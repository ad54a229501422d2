"""Benchmark: how long a switch takes to put all traffic on green and back, and what
requests see meanwhile. Everything runs on loopback and stops by itself.

- nginx: a real nginx in front of two small HTTP servers, 500 requests/s from a separate
  process (a fresh connection per request; a second pass with keep-alive clients).
  Baseline: the bare operator move, no migrator: write the upstream file, `nginx -s
  reload`. Measured: the time until the command returns, the time until every answer
  comes from the target colour, and the failed and slow requests in each window.
- haproxy: a real HAProxy in front of the same two servers, the same load. Baseline:
  the bare operator move through the runtime API, no migrator: on one socat line, the
  target side `ready` at weight 100, then the other side at weight 0 and drained.
- kmock: the kubernetes backend against the kmock emulator. Baseline: the bare
  selector patch (`kubectl patch service ...`) with the same client.

migrator's figures include its gates (a database round trip), the preflight (`nginx -t`,
or reading the Service and Deployments), the audit-log writes and, for nginx, waiting
until new workers took over. Figures are medians of --runs runs, printed beside the
baseline as ratios.

    .venv/bin/python bench/switch.py [--runs 5] [--rate 500] [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrator import commands
from migrator.db.embedded import start as start_embedded
from tests.support.haproxy_env import HAPROXY, HAProxyServer
from tests.support.kmock_cluster import NS, Cluster
from tests.support.switch_env import (
    NGINX,
    ColourServer,
    LoadGenerator,
    LoadReport,
    NginxServer,
    ready_release,
    switch_plan,
)

SLOW = 0.1  # seconds: a request slower than this counts as slow


class Window:
    """One timed move: when it began (monotonic), when the command returned."""

    def __init__(self, label: str, target: str) -> None:
        self.label, self.target = label, target
        self.start = self.returned = 0.0

    def run(self, action: Callable[[], Any]) -> None:
        self.start = time.monotonic()
        action()
        self.returned = time.monotonic()


def _settled(report: LoadReport, w: Window, horizon: float) -> float | None:
    """Seconds from the command until the last answer from the other colour (after it,
    every answer comes from the target)."""
    other = "green" if w.target == "blue" else "blue"
    begin, end = w.start - report.origin, w.start - report.origin + horizon
    last_other = [at for at, colour, _ in report.timeline if begin <= at < end and colour == other]
    if not last_other:
        return 0.0
    return max(last_other) - begin


def _requests(report: LoadReport, w: Window, horizon: float) -> tuple[int, int, int]:
    begin, end = w.start - report.origin, w.start - report.origin + horizon
    inside = [(colour, took) for at, colour, took in report.timeline if begin <= at < end]
    return len(inside), sum(1 for c, _ in inside if not c), sum(1 for _, t in inside if t > SLOW)


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def bench_nginx(url: str, runs: int, rate: float, keepalive: bool) -> list[list[str]]:
    blue, green = ColourServer("blue"), ColourServer("green")
    nginx = NginxServer([blue.address])
    rows: list[list[str]] = []
    try:
        section = {
            "nginx": nginx.backend_settings([blue.address], [green.address]),
            "watch": {"duration": 0, "interval": 1},
        }
        plan = switch_plan(section, release="bench-nginx")
        opts = ready_release(url, plan)
        upstream = Path(nginx.upstream_file)

        def bare(colour: ColourServer) -> Callable[[], None]:
            def move() -> None:
                upstream.write_text(f"upstream api {{\n    server {colour.address};\n}}\n")
                subprocess.run(
                    [str(NGINX), "-c", str(nginx.config), "-s", "reload"],
                    check=True,
                    stderr=subprocess.DEVNULL,
                )

            return move

        windows: list[Window] = []
        load = LoadGenerator(nginx.url, rate=rate, threads=8, keepalive=keepalive, max_seconds=600)
        time.sleep(0.5)
        for _ in range(runs):
            for label, target, action in (
                ("baseline", "green", bare(green)),
                ("baseline", "blue", bare(blue)),
                ("migrator", "green", lambda: commands.switch(plan, opts)),
                ("migrator", "blue", lambda: commands.rollback(plan, opts)),
            ):
                w = Window(label, target)
                w.run(action)
                windows.append(w)
                time.sleep(1.0)  # let the old workers drain before the next move
        report = load.stop()
        mode = "keep-alive" if keepalive else "new connection per request"
        rows.extend(_window_rows("nginx", windows, report))
        achieved = report.sent / max(report.timeline[-1][0], 1e-9) if report.timeline else 0.0
        print(
            f"nginx load ({mode}): {report.sent} requests at {achieved:.0f}/s achieved "
            f"(asked {rate:.0f}/s), {report.failed} failed, {report.slow} slower than "
            f"{SLOW * 1000:.0f} ms, {report.retried} keep-alive retries, "
            f"max latency {report.max_latency * 1000:.1f} ms"
        )
        if report.errors:
            print("  first failures:", "; ".join(report.errors[:5]))
    finally:
        nginx.stop()
        blue.stop()
        green.stop()
    return rows


def _window_rows(name: str, windows: list[Window], report: LoadReport) -> list[list[str]]:
    """One row per direction: the baseline's and migrator's windows side by side."""
    rows: list[list[str]] = []
    horizon = 1.0
    for target, what in (("green", "to 100% green"), ("blue", "back to 100% blue")):
        figures: dict[str, dict[str, float]] = {}
        for label in ("baseline", "migrator"):
            mine = [w for w in windows if w.label == label and w.target == target]
            settled = [_settled(report, w, horizon) for w in mine]
            counts = [_requests(report, w, horizon) for w in mine]
            figures[label] = {
                "returned": _median_ms([w.returned - w.start for w in mine]),
                "settled": _median_ms([s for s in settled if s is not None]),
                "sent": sum(c[0] for c in counts),
                "failed": sum(c[1] for c in counts),
                "slow": sum(c[2] for c in counts),
            }
        b, m = figures["baseline"], figures["migrator"]
        rows.append(
            [
                f"{name} {what}",
                f"{b['returned']:.1f} ms",
                f"{m['returned']:.1f} ms",
                f"{m['returned'] / b['returned']:.1f}x",
                f"{b['settled']:.1f} ms",
                f"{m['settled']:.1f} ms",
                f"{m['settled'] / b['settled']:.1f}x" if b["settled"] else "-",
                f"{int(b['failed'])}/{int(b['sent'])}, slow {int(b['slow'])}",
                f"{int(m['failed'])}/{int(m['sent'])}, slow {int(m['slow'])}",
            ]
        )
    return rows


def bench_haproxy(url: str, runs: int, rate: float) -> list[list[str]]:
    blue, green = ColourServer("blue"), ColourServer("green")
    haproxy = HAProxyServer({"blue1": blue.address}, {"green1": green.address})
    rows: list[list[str]] = []
    try:
        section = {"haproxy": haproxy.backend_settings(), "watch": {"duration": 0, "interval": 1}}
        plan = switch_plan(section, release="bench-haproxy")
        opts = ready_release(url, plan)

        def bare(target: str) -> Callable[[], None]:
            other = "blue1" if target == "green1" else "green1"

            def move() -> None:
                # What migrator does, by hand on one socat line: the target ready at
                # weight 100, then the other side at 0 and drained.
                haproxy.command(
                    f"set server api/{target} state ready; set weight api/{target} 100; "
                    f"set weight api/{other} 0; set server api/{other} state drain"
                )

            return move

        windows: list[Window] = []
        load = LoadGenerator(haproxy.url, rate=rate, threads=8, max_seconds=600)
        time.sleep(0.5)
        for _ in range(runs):
            for label, target, action in (
                ("baseline", "green", bare("green1")),
                ("baseline", "blue", bare("blue1")),
                ("migrator", "green", lambda: commands.switch(plan, opts)),
                ("migrator", "blue", lambda: commands.rollback(plan, opts)),
            ):
                w = Window(label, target)
                w.run(action)
                windows.append(w)
                time.sleep(1.0)  # same pacing as nginx
        report = load.stop()
        rows.extend(_window_rows("haproxy", windows, report))
        achieved = report.sent / max(report.timeline[-1][0], 1e-9) if report.timeline else 0.0
        print(
            f"haproxy load (new connection per request): {report.sent} requests at "
            f"{achieved:.0f}/s achieved (asked {rate:.0f}/s), {report.failed} failed, "
            f"{report.slow} slower than {SLOW * 1000:.0f} ms, "
            f"max latency {report.max_latency * 1000:.1f} ms"
        )
        if report.errors:
            print("  first failures:", "; ".join(report.errors[:5]))
    finally:
        haproxy.stop()
        blue.stop()
        green.stop()
    return rows


def bench_kmock(url: str, runs: int) -> list[list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        cluster.lag = 1
        cluster.poll = 0.05  # an idle controller should not load the emulator
        try:
            section = {
                "kubernetes": {
                    "namespace": NS,
                    "service": "api",
                    "selector": {"key": "version", "blue": "blue", "green": "green"},
                    "blue": {"deployment": "api-blue"},
                    "green": {"deployment": "api-green"},
                    "kubeconfig": str(cluster.kubeconfig),
                },
                "watch": {"duration": 0, "interval": 1},
            }
            plan = switch_plan(section, release="bench-kmock")
            opts = ready_release(url, plan)

            def bare(colour: str) -> Callable[[], None]:
                def move() -> None:
                    cluster.core.patch_namespaced_service(
                        "api", NS, {"spec": {"selector": {"version": colour}}}
                    )

                return move

            times: dict[tuple[str, str], list[float]] = {}
            calls: dict[tuple[str, str], list[int]] = {}
            for _ in range(runs):
                for label, target, action in (
                    ("baseline", "green", bare("green")),
                    ("baseline", "blue", bare("blue")),
                    ("migrator", "green", lambda: commands.switch(plan, opts)),
                    ("migrator", "blue", lambda: commands.rollback(plan, opts)),
                ):
                    w = Window(label, target)
                    before = cluster.client_requests()
                    w.run(action)
                    calls.setdefault((label, target), []).append(cluster.client_requests() - before)
                    assert cluster.selector()["version"] == target
                    times.setdefault((label, target), []).append(w.returned - w.start)
            rows = []
            for target, what in (("green", "to 100% green"), ("blue", "back to 100% blue")):
                b = _median_ms(times[("baseline", target)])
                m = _median_ms(times[("migrator", target)])
                cb = statistics.median(calls[("baseline", target)])
                cm = statistics.median(calls[("migrator", target)])
                rows.append(
                    [
                        f"kmock {what}",
                        f"{b:.1f} ms",
                        f"{m:.1f} ms",
                        f"{m / b:.1f}x",
                        f"API requests {cb:.0f} vs {cm:.0f}",
                    ]
                )
            return rows
        finally:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--only", choices=["nginx", "haproxy", "kmock"], default=None)
    args = parser.parse_args()

    server = None
    if args.database_url:
        base = args.database_url
        make_db: Callable[[str], str] = lambda name: base  # noqa: E731
    else:
        server = start_embedded()
        make_db = server.create_database
    try:
        print(f"switch benchmark: {args.runs} runs each, medians; loopback only")
        nginx_rows: list[list[str]] = []
        kmock_rows: list[list[str]] = []
        haproxy_rows: list[list[str]] = []
        if HAPROXY is None:
            print("haproxy: not installed, skipped (apt-get install haproxy)")
        elif args.only in (None, "haproxy"):
            haproxy_rows = bench_haproxy(make_db("bench_haproxy"), args.runs, args.rate)
        if NGINX is None:
            print("nginx: not installed, skipped (apt-get install nginx)")
        elif args.only in (None, "nginx"):
            nginx_rows = bench_nginx(make_db("bench_nginx"), args.runs, args.rate, False)
            nginx_rows += bench_nginx(make_db("bench_nginx_ka"), args.runs, args.rate, True)
        if args.only in (None, "kmock"):
            kmock_rows = bench_kmock(make_db("bench_kmock"), args.runs)
    finally:
        if server is not None:
            server.stop()

    print()
    head = ["move", "command returns: baseline", "migrator", "ratio", "API requests"]
    print(" | ".join(head))
    for row in kmock_rows:
        print(" | ".join(row))
    if nginx_rows:
        print()
        print(
            "nginx rows (first 2 = new connection per request, last 2 = keep-alive):\n"
            "move | returns: baseline | migrator | ratio | all answers from target: baseline"
            " | migrator | ratio | failed/sent (slow) baseline | migrator"
        )
        for row in nginx_rows:
            print(" | ".join(row))
    if haproxy_rows:
        print()
        print(
            "haproxy rows (new connection per request; baseline: one runtime API line):\n"
            "move | returns: baseline | migrator | ratio | all answers from target: baseline"
            " | migrator | ratio | failed/sent (slow) baseline | migrator"
        )
        for row in haproxy_rows:
            print(" | ".join(row))


if __name__ == "__main__":
    main()
