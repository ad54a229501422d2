"""Real things for the switch tests and bench/switch.py, all on loopback.

- `ColourServer`: a tiny HTTP server that answers with its colour (blue or green); its
  status can be changed while it runs, to make green fail a probe.
- `NginxServer`: a real nginx master owned by the test: its own -c config, pid file and
  temp folders under a temp dir, listening on a free 127.0.0.1 port, in front of an
  upstream file that the nginx backend rewrites.
- `LoadGenerator`: a separate process sending paced GETs through nginx, counting
  failures, slow answers and which colour answered.
- `FakePrometheus`: answers /api/v1/query with a value the test sets.
- `SleptTime`: a clock that moves only while the code sleeps, for watches that must
  count their rounds however busy the machine is.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from migrator.switch import Timing

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class ColourServer:
    """Answers every GET with its colour; `status` (and `health_status` for /healthz)
    may be changed while it runs."""

    def __init__(self, colour: str, *, status: int = 200, delay: float = 0.0) -> None:
        self.colour = colour
        self.status = status
        self.health_status = 200  # /healthz only: a health check can fail while pages work
        self.health_failures = 0  # the next this many /healthz answers are 503
        self.delay = delay
        self.hits = 0
        self.pages = 0  # GETs other than /healthz: traffic, not probes
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.hits += 1
                if owner.delay:
                    time.sleep(owner.delay)
                body = owner.colour.encode()
                healthz = self.path.startswith("/healthz")
                owner.pages += not healthz
                status = owner.health_status if healthz else owner.status
                if healthz and owner.health_failures > 0:
                    owner.health_failures -= 1
                    status = 503
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Quiet(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SleptTime:
    """A clock that moves only by what the code sleeps, and a sleep that really sleeps
    (so servers and controller threads move meanwhile): a watch of 2s every 100ms is 20
    rounds however busy the machine is, where on the wall clock it could be two.
    `after_sleep`, if set, runs after each sleep: a test's hook into the watch. A subclass
    may `wait` for the event the code polls for instead of the time (kube_switch's)."""

    def __init__(self) -> None:
        self.micros = 0
        self.after_sleep: Any = None

    @property
    def now(self) -> float:
        return self.micros / 1e6

    def wait(self, seconds: float) -> None:
        """What a sleep of the code does in the real world: here, really sleep."""
        time.sleep(seconds)

    def sleep(self, seconds: float) -> None:
        self.wait(seconds)
        # Whole microseconds, at least one: float seconds summed can stall, a watch's last
        # tiny remainder (5e-17s) then adding nothing to the clock, and it never ends.
        self.micros += max(1, round(seconds * 1e6))
        if self.after_sleep is not None:
            self.after_sleep()

    @property
    def timing(self) -> Timing:
        return Timing(clock=lambda: self.now, sleep=self.sleep)


class FakePrometheus:
    """/api/v1/query answers a vector with one sample whose value the test sets."""

    def __init__(self, value: float | None = 0.0) -> None:
        self.value = value
        self.queries: list[str] = []
        self.bad_from: tuple[int, float] | None = None  # (query number, value from then on)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path != "/api/v1/query":
                    self.send_error(404)
                    return
                owner.queries.append(parse_qs(url.query).get("query", [""])[0])
                if owner.bad_from is not None and len(owner.queries) >= owner.bad_from[0]:
                    owner.value = owner.bad_from[1]
                result = (
                    []
                    if owner.value is None
                    else [{"metric": {}, "value": [time.time(), repr(owner.value)]}]
                )
                body = json.dumps(
                    {"status": "success", "data": {"resultType": "vector", "result": result}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_CONF = """\
{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/upstream.conf;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


class NginxServer:
    """A test-owned nginx master (daemon off) with its own config under a temp dir."""

    def __init__(self, blue: list[str]) -> None:
        assert NGINX is not None, "nginx is not installed"
        self.dir = Path(tempfile.mkdtemp(prefix="migrator-nginx-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.dir / "nginx.conf"
        self.upstream_file = self.dir / "upstream.conf"
        user = pwd.getpwuid(os.getuid()).pw_name
        self.config.write_text(
            _CONF.format(
                d=self.dir, port=self.port, user=f"user {user};" if os.getuid() == 0 else ""
            )
        )
        # Hand-written, as an operator would have it before migrator ever ran.
        self.upstream_file.write_text(
            "upstream api {\n" + "".join(f"    server {b};\n" for b in blue) + "}\n"
        )
        self.proc = subprocess.Popen(
            [NGINX, "-c", str(self.config), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"nginx did not start: {err}") from None
                time.sleep(0.05)

    def backend_settings(self, blue: list[str], green: list[str]) -> dict[str, Any]:
        """The plan's `nginx:` section for this server."""
        return {
            "upstream_file": str(self.upstream_file),
            "upstream": "api",
            "blue": blue,
            "green": green,
            "binary": NGINX,
            "config": str(self.config),
        }

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class LoadReport:
    """What the load generator saw."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    slow: int = 0
    retried: int = 0  # keep-alive requests retried once on a connection closed by a reload
    colours: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    max_latency: float = 0.0
    first_green: float | None = None  # seconds since start of the first green answer
    last_blue: float | None = None
    # (seconds since origin, colour or "" when failed, latency) for every request
    timeline: list[tuple[float, str, float]] = field(default_factory=list)
    origin: float = 0.0  # time.monotonic() in the load process when it began (system-wide)


def _load_loop(
    url: str,
    rate: float,
    slow: float,
    stop: Any,
    ready: Any,
    out: Any,
    max_seconds: float,
    threads: int,
    keepalive: bool,
) -> None:
    """The child process: `threads` paced keep-alive clients until `stop` is set."""
    import http.client

    host, port = urlparse(url).hostname, urlparse(url).port
    report = LoadReport()
    lock = threading.Lock()
    start = time.monotonic()
    report.origin = start
    per_thread = rate / threads

    def client() -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        t0 = time.monotonic()
        while not stop.is_set() and time.monotonic() - start < max_seconds:
            due = t0 + n / per_thread
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            n += 1
            began = time.monotonic()
            colour, error = "", ""
            for attempt in (1, 2):
                reused = conn is not None
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=5)
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    body = response.read().decode()
                    error = f"status {response.status}" if response.status != 200 else ""
                    colour = body
                    if not keepalive or response.getheader("Connection", "").lower() == "close":
                        conn.close()
                        conn = None
                    break
                except Exception as exc:  # every failure counts; the connection is renewed
                    error = f"{type(exc).__name__}: {exc}"
                    if conn is not None:
                        conn.close()
                    conn = None
                    # A reused keep-alive connection the server closed before answering:
                    # RFC 9112 9.3.1 lets a client retry an idempotent request once, as
                    # browsers, curl and Go's net/http do. Counted apart as `retried`.
                    stale = isinstance(
                        exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
                    )
                    if not (keepalive and reused and stale and attempt == 1):
                        break
                    with lock:
                        report.retried += 1
            took = time.monotonic() - began
            at = began - start
            with lock:
                report.sent += 1
                report.max_latency = max(report.max_latency, took)
                if took > slow:
                    report.slow += 1
                if error:
                    report.failed += 1
                    report.timeline.append((at, "", took))
                    if len(report.errors) < 20:
                        report.errors.append(f"{at:.3f}s {error}")
                    continue
                report.ok += 1
                report.colours[colour] = report.colours.get(colour, 0) + 1
                if colour == "green" and report.first_green is None:
                    report.first_green = at
                if colour == "blue":
                    report.last_blue = at
                report.timeline.append((at, colour, took))
        if conn is not None:
            conn.close()

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    ready.set()
    for w in workers:
        w.join()
    out.put(report)


class LoadGenerator:
    """Paced load from a separate process; `stop()` returns the LoadReport."""

    def __init__(
        self,
        url: str,
        *,
        rate: float = 200.0,
        slow: float = 0.5,
        max_seconds: float = 120.0,
        threads: int = 4,
        keepalive: bool = False,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        ready = ctx.Event()
        self._out: Any = ctx.Queue()
        self.started = time.monotonic()
        self.proc = ctx.Process(
            target=_load_loop,
            args=(url, rate, slow, self._stop, ready, self._out, max_seconds, threads, keepalive),
            daemon=True,
        )
        self.proc.start()
        if not ready.wait(30):
            raise RuntimeError("the load generator did not start")
        self.started = time.monotonic()

    def stop(self) -> LoadReport:
        self._stop.set()
        report: LoadReport = self._out.get(timeout=60)
        self.proc.join(timeout=10)
        return report


# -- releases ready to switch ----------------------------------------------------------------

SEED_SQL = "CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL)"


def seed_users(url: str) -> None:
    """The users table switch_plan's expand adds to."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED_SQL)


def command_section(state: Path, **extra: Any) -> dict[str, Any]:
    """A switch section for the command backend whose load balancer is the file `state`
    (green's percent, 0 to start), with no watch; `extra` adds or replaces keys."""
    state.write_text("0\n")
    return {
        "command": {
            "to_green": f"echo {{percent}} > {state}",
            "to_blue": f"echo 0 > {state}",
            "status": f"cat {state}",
        },
        "watch": {"duration": 0, "interval": 1},
        **extra,
    }


def switch_plan(switch: dict[str, Any], release: str = "r-switch") -> Any:
    """A plan adding users.phone, with the given switch section."""
    from migrator.plan.models import Plan

    return Plan.model_validate(
        {
            "release": release,
            "expand": [
                {"add_column": {"table": "users", "column": {"name": "phone", "type": "text"}}}
            ],
            "switch": switch,
        }
    )


def record_check(url: str, plan: Any, action: str = "check.passed", **details: Any) -> None:
    """What `migrator check` records when it passes (or fails) for a plan."""
    from migrator.commands.session import STATE
    from migrator.db.connection import connect, make_engine

    engine = make_engine(url)
    try:
        with connect(engine) as conn:
            STATE.init(conn)
            STATE.event(conn, "test", action, plan.release, plan.digest(), **details)
            conn.commit()
    finally:
        engine.dispose()


def ready_release(url: str, plan: Any, *, check: bool = True) -> Any:
    """Seed, expand and (by default) record a passing check: the switch gates are open.
    Returns the Options to run commands with."""
    from migrator import commands

    seed_users(url)
    opts = commands.Options(database_url=url, actor="tester@test")
    commands.expand(plan, opts)
    if check:
        record_check(url, plan)
    return opts


def traffic_events(url: str, release: str) -> list[dict[str, Any]]:
    """The recorded traffic changes of a release, oldest first."""
    from migrator.commands.session import STATE
    from migrator.db.connection import connect, make_engine

    engine = make_engine(url)
    try:
        with connect(engine) as conn:
            return [e for e in STATE.events(conn, release) if e["action"] == "switch.traffic"]
    finally:
        engine.dispose()


def phase(url: str, release: str) -> str:
    """The release's phase in the state store."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT phase FROM migrator.releases WHERE name = %s", (release,))
        return str(row.fetchone()[0])  # type: ignore[index]
