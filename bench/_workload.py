"""What the benches share: an application loop timed per operation, and a lock-wait sampler.

- `q`: one statement on its own autocommit connection.
- `App`: one connection playing ``operation`` at ``rate`` a second, in a thread or a
  spawned process (so migrator's own Python work in the bench's process cannot delay
  it); every operation's time runs from when it was sent to its answer, so a lock wait
  or a commit stall is all in it.
- `StepTimes`: an observer keeping each migrator step's start, end and lock retries.
- `LockSampler`: polls pg_locks for the application's sessions waiting on a lock, and
  keeps each wait (pid, waitstart) at the longest it was seen: the lock type, the mode
  waited for, the relation, and who blocks it (pg_blocking_pids) with their statement
  from pg_stat_activity. A wait shorter than a poll can be missed; one seen is at least
  as long as recorded.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import psycopg

from migrator.observer import Observer

APP_NAME = "bench app"

# An operation: (connection, random source) -> (kind, a value to keep or None).
Operation = Callable[[psycopg.Connection[Any], random.Random], tuple[str, Any]]


def q(url: str, query: str) -> list[tuple[Any, ...]]:
    """One statement on its own autocommit connection; its rows, if any."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode())
        return cur.fetchall() if cur.description else []


@dataclass(frozen=True)
class Op:
    """One application operation: when it was sent (time.time()), how long it took."""

    sent: float
    seconds: float
    kind: str
    value: Any
    error: str | None


def _loop(
    url: str,
    operation: Operation,
    rate: float,
    seed: int,
    stop: Any,
    ready: Any,
    application_name: str,
) -> list[Op]:
    ops: list[Op] = []
    rng = random.Random(seed)
    with psycopg.connect(
        url, autocommit=True, prepare_threshold=None, application_name=application_name
    ) as conn:
        conn.execute("SET statement_timeout = '600s'")
        due = time.time()
        while not stop.is_set():
            due += 1.0 / rate
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            sent = time.time()
            kind, value, error = "error", None, None
            try:
                kind, value = operation(conn, rng)
            except psycopg.Error as exc:
                error = (str(exc).strip().splitlines() or [""])[0]
            ops.append(Op(sent, time.time() - sent, kind, value, error))
            ready.set()
    return ops


def _process_main(
    url: str,
    operation: Operation,
    rate: float,
    seed: int,
    stop: Any,
    ready: Any,
    application_name: str,
    out: Connection,
) -> None:
    out.send(_loop(url, operation, rate, seed, stop, ready, application_name))


@dataclass
class App:
    """An application connection running ``operation`` at ``rate`` a second until
    `finish`, which returns every operation. ``process=True`` runs it in a spawned
    process (``operation`` must then be a module-level function)."""

    url: str
    operation: Operation
    rate: float
    process: bool = True
    seed: int = 7
    application_name: str = APP_NAME
    _worker: Any = None
    _stop: Any = None
    _receiver: Connection | None = None
    _ops: list[Op] = field(default_factory=list)

    def start(self, timeout: float = 120) -> App:
        args = (self.url, self.operation, self.rate, self.seed)
        ready: Any
        if self.process:
            ctx = multiprocessing.get_context("spawn")
            self._stop, ready = ctx.Event(), ctx.Event()
            self._receiver, sender = ctx.Pipe(duplex=False)
            self._worker = ctx.Process(
                target=_process_main,
                args=(*args, self._stop, ready, self.application_name, sender),
            )
        else:
            self._stop, ready = threading.Event(), threading.Event()

            def run() -> None:
                self._ops = _loop(*args, self._stop, ready, self.application_name)

            self._worker = threading.Thread(target=run, daemon=True)
        self._worker.start()
        if not ready.wait(timeout):
            raise SystemExit("the application workload did not start")
        return self

    def finish(self) -> list[Op]:
        self._stop.set()
        if self._receiver is not None:
            self._ops = self._receiver.recv()
        self._worker.join()
        return self._ops


@dataclass(frozen=True)
class Summary:
    """Operations sent in a window: count, p99 and longest (ms), errors."""

    count: int
    p99_ms: float
    longest_ms: float
    errors: int


def summary(ops: list[Op], start: float, end: float) -> Summary:
    window = [o for o in ops if start <= o.sent < end]
    if not window:
        return Summary(0, 0.0, 0.0, 0)
    latencies = sorted(o.seconds * 1000 for o in window)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Summary(len(window), p99, latencies[-1], sum(1 for o in window if o.error))


# -- lock waits ------------------------------------------------------------------------

_WAITS = """
SELECT l.pid, a.application_name, extract(epoch FROM l.waitstart)::float8,
       extract(epoch FROM clock_timestamp() - l.waitstart)::float8,
       l.locktype, l.mode, l.relation::regclass::text, left(a.query, 200),
       ARRAY(SELECT b.pid::text || ' ' || coalesce(b.application_name, '') || ': '
                    || left(b.query, 300)
             FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(l.pid)))
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted AND l.waitstart IS NOT NULL AND a.application_name LIKE ANY (%s)
"""


@dataclass(frozen=True)
class Wait:
    """One lock wait of an application session, at the longest it was seen."""

    seen: float  # the sampler's clock when first seen
    pid: int
    application: str
    seconds: float
    locktype: str
    mode: str
    relation: str | None
    query: str
    blockers: tuple[str, ...]

    def describe(self) -> str:
        on = self.relation or self.locktype
        by = "; ".join(self.blockers) or "(blocker gone)"
        return f"{self.mode} on {on} for {self.query!r}, blocked by {by}"


class LockSampler:
    """The application's lock waits, polled every ``every`` seconds (see the module doc).

    ``application`` is a LIKE pattern for the sessions' application_name, ``also`` more
    patterns whose waits are kept too (``migrator%``: what made migrator's steps wait);
    ``clock`` gives the times the windows of `longest` are in (the workload's)."""

    def __init__(
        self,
        url: str,
        every: float = 0.01,
        application: str = APP_NAME + "%",
        clock: Callable[[], float] = time.time,
        also: tuple[str, ...] = (),
    ) -> None:
        self.url, self.every, self.application, self.clock = url, every, application, clock
        self.patterns = [application, *also]
        self.waits: dict[tuple[int, float], Wait] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> LockSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="bench sampler") as conn:
            while not self._stop.is_set():
                now = self.clock()
                rows = conn.execute(_WAITS, (self.patterns,)).fetchall()
                for pid, app, started, waited, locktype, mode, relation, query, blockers in rows:
                    key = (int(pid), float(started))
                    first = self.waits.get(key)
                    if first is None or waited > first.seconds:
                        self.waits[key] = Wait(
                            first.seen if first else now,
                            int(pid),
                            str(app),
                            float(waited),
                            str(locktype),
                            str(mode),
                            relation,
                            str(query),
                            tuple(blockers),
                        )
                self.polls += 1
                time.sleep(self.every)

    def longest(self, start: float, end: float, application: str | None = None) -> Wait | None:
        """The longest wait first seen in [start, end) of the sessions whose
        application_name starts with ``application`` (default: the application's)."""
        prefix = self.application.rstrip("%") if application is None else application
        inside = [
            w
            for w in self.waits.values()
            if start <= w.seen < end and w.application.startswith(prefix)
        ]
        return max(inside, key=lambda w: w.seconds, default=None)


@dataclass
class StepRun:
    name: str
    started: float
    ended: float = 0.0
    retries: int = 0

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class StepTimes(Observer):
    """Each step migrator ran (time.time() at its start and end) and its lock retries.

    The contract tells only of a step's start: a step without an end ends when the next
    one starts, or at `close` (call it when the command returns)."""

    def __init__(self) -> None:
        self.steps: list[StepRun] = []

    def close(self) -> None:
        if self.steps and not self.steps[-1].ended:
            self.steps[-1].ended = time.time()

    def step_started(self, step: str, description: str) -> None:
        self.close()
        self.steps.append(StepRun(step, time.time()))

    def step_done(self, step: str, description: str, seconds: float) -> None:
        if self.steps and self.steps[-1].name == step and not self.steps[-1].ended:
            self.steps[-1].ended = time.time()
        else:  # told only of its end
            self.steps.append(StepRun(step, time.time() - seconds, time.time()))

    def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
        if self.steps and self.steps[-1].name == step:
            self.steps[-1].retries = attempt
