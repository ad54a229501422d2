"""The backfill runner: workers walking claimed ranges, throttled, checkpointed.

One call of `Backfill.run` fills one `BackfillSpec`:

- `prepare` chooses the walk (primary key, unique NOT NULL key, or ctid pages) and,
  the first time, splits the table into ranges in ``migrator.backfill_ranges``;
- ``workers`` threads, each on its own session, claim ranges (other processes on the
  same release claim from the same table) and walk them in batches, in three passes
  where that lets most updates stay on their page (`Backfill.passes`), two ranges'
  passes in turn. Every batch is
  one short transaction: ``SET LOCAL lock_timeout``, the UPDATE of rows that still need
  it, and the range's checkpoint, committed together. A batch that loses a lock race
  (or a deadlock) is rolled back and retried with backoff, half as big;
- ``batch_size: auto`` sizes each batch so it takes about ``target_batch_time``;
- the main thread reads the server's load four times a second, decides with
  `throttle.decide`, reports progress to the observer and keeps the step's checkpoint
  (rows, estimate, rate, ETA) fresh for `migrator status` in another terminal.

A partitioned table is walked partition by partition (`Backfill._run_partitions`): each
leaf partition is a step of its own (``KEY/partition``, ``KEY/schema.partition`` for one
in another schema than the table), with its own walk, ranges and
checkpoint, throttled as any table, and a rerun skips the partitions already done.

A batch and its checkpoint commit in one transaction, so a process killed at any moment
loses at most its batches in flight, rolled back with their sessions, and the rerun
redoes exactly those. (Asynchronous commit was measured too: no faster here, and it
made the concurrent workload's commits flush the backfill's WAL.)
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from migrator.backfill import throttle
from migrator.backfill.batcher import (
    Batch,
    ctid_batch,
    keyset_batch,
    keyset_batch_to,
    scalar,
    step_end,
)
from migrator.backfill.keys import (
    Walk,
    choose_walk,
    dense_integer_key,
    indexed_columns,
    leaf_partitions,
    pass_rows,
)
from migrator.backfill.ranges import Range, RangeStore, Summary, plan_ranges
from migrator.backfill.sizing import BatchSizer
from migrator.db.connection import connect, describe_db_error, note_statement, sqlstate
from migrator.durations import format_duration
from migrator.engine.executor import LOCK_NOT_AVAILABLE, RetryPolicy
from migrator.engine.state import StateStore
from migrator.engine.steps import BackfillSpec
from migrator.errors import LockNotAcquired, StepFailed, UsageError
from migrator.observer import NULL_OBSERVER, Observer
from migrator.plan.models import Plan
from migrator.sqltext import ident, literal, schema_first_sql

# Lock timeouts, deadlocks and serialization failures: the batch is safe to redo.
RETRYABLE = {LOCK_NOT_AVAILABLE, "40P01", "40001"}
MONITOR_INTERVAL = 0.25
REPORT_INTERVAL = 0.5
RATE_WINDOW = 10.0
IDLE_POLL = 0.3
MAX_PASSES = 5
# Passes over each range where HOT updates are possible (`Backfill.passes`).
HOT_PASSES = 3
# Ranges a worker holds at once, walking their passes in turn (`Backfill._work`).
RANGES_IN_TURN = 2
_DONE = object()
# The number every range's last pass has in ``migrator.backfill_ranges.pass``: with N
# passes a range starts at FINAL_PASS + 1 - N (so ranges stored by a migrator that
# walked them in one or two passes read the same).
FINAL_PASS = 2

Reader = Callable[[Connection, Sequence[int]], throttle.Readings]

STATE = StateStore()


@dataclass
class Settings:
    """How to run one backfill (from the plan's ``backfill:`` and ``database:``)."""

    batch_size: int | None = None  # None: auto, sized to target_batch_time
    target_batch_time: float = 0.2
    pause: float = 0.0
    lock_timeout: float = 1.0
    limits: throttle.Limits = field(default_factory=throttle.Limits)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    workers: int = 1
    # The fewest ranges per worker, however small the table.
    ranges_per_worker: int = 4
    # The ranges planned per worker (fewer on a small table: `plan_ranges`), enough
    # that the workers finish together: each ends on the ranges it holds, walked alone.
    # 10M rows, 2 workers: 16 ranges in all 412-430k rows/s, 48 449-458k (two passes,
    # one range at a time); 96 against 48, same run, 3 runs each: 467-501k against
    # 439-467k (three passes, two ranges in turn).
    planned_ranges_per_worker: int = 48
    # The plan's max_retained_wal (a size, a share, "off"; None: the default share),
    # turned into ``limits.max_retained_wal`` when the run starts (`throttle`).
    retained_wal: int | str | None = "off"


@dataclass(frozen=True)
class Outcome:
    """What a finished backfill did (rows counted over every process's workers)."""

    rows: int
    batches: int
    total: int
    walk: str
    seconds: float
    passes: int


@dataclass
class _Shared:
    """What the threads of one run share; guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    pids: set[int] = field(default_factory=set)
    errors: list[BaseException] = field(default_factory=list)
    decision: throttle.Decision = throttle.GO
    batch_size: int = 0
    rows_here: int = 0


class Backfill:
    """Fills one spec's rows; `run` returns when every range is done."""

    def __init__(
        self,
        engine: Engine,
        spec: BackfillSpec,
        *,
        release: str,
        key: str,
        settings: Settings | None = None,
        observer: Observer = NULL_OBSERVER,
        reader: Reader | None = None,
        restart: bool = False,
    ) -> None:
        self.spec = spec
        # Names the spec's expressions write bare resolve in its schema first.
        self._schema_first = schema_first_sql(spec.schema, local=True)
        self.release = release
        self.key = key
        self.settings = settings or Settings()
        self.observer = observer
        self.reader: Reader = reader or throttle.ServerReader()
        self.limits = self.settings.limits
        self._unreadable_told = False
        self.restart = restart
        self.store = RangeStore(release, key)
        # Sessions of its own (not the caller's pool): one per worker, held for the run.
        self.engine = create_engine(
            engine.url,
            poolclass=NullPool,
            connect_args={"application_name": "migrator backfill", "connect_timeout": 10},
        )
        self.walk: Walk | None = None
        self.stepping = False
        self.pass_count = 1
        self.total = 0
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._shared = _Shared()
        self._observe = threading.Lock()

    # -- preparing ---------------------------------------------------------------------

    def prepare(self) -> Walk:
        """Choose the walk and plan the ranges (once per step; later runs reuse them)."""
        with connect(self.engine) as conn:
            with conn.begin():
                self.store.lock_step(conn)
                walk = choose_walk(conn, self.spec.schema, self.spec.table)
                self.stepping = dense_integer_key(conn, self.spec.schema, self.spec.table, walk)
                stored = STATE.checkpoint(conn, self.release, "backfill", self.key)
                same_walk = stored.get("walk") == _walk_json(walk)
                if self.store.exists(conn) and same_walk and not self.restart:
                    self.total = int(stored.get("total") or 0)
                    self.pass_count = int(stored.get("passes") or 1)
                else:
                    # First run, or the table's key changed since: positions on the old
                    # walk mean nothing now, so plan again (only rows needing it are
                    # touched, so walking twice is harmless).
                    self.store.delete(conn)
                    count = self.settings.workers * self.settings.planned_ranges_per_worker
                    floor = self.settings.workers * self.settings.ranges_per_worker
                    if self._any_to_fill(conn):
                        bounds, self.total = plan_ranges(conn, self.spec, walk, count, floor)
                        passes = self.pass_count = self.passes(conn)
                    else:
                        # No range at all: `run` ends without a batch (once per table,
                        # not one empty batch per key range and pass).
                        bounds, self.total, passes = [], 0, 1
                        self.pass_count = 1
                    self.store.create(conn, bounds, first_pass=FINAL_PASS + 1 - passes)
                    STATE.save_checkpoint(
                        conn,
                        self.release,
                        "backfill",
                        self.key,
                        {
                            "walk": _walk_json(walk),
                            "rows": 0,
                            "total": self.total,
                            "ranges": len(bounds),
                            "passes": passes,
                            "updated_at": _now(),
                        },
                    )
        self.walk = walk
        return walk

    def _any_to_fill(self, conn: Connection) -> bool:
        """Whether any row needs the fill now (one scan that stops at the first).

        Rows written after the expand are filled by the sync trigger or the new
        version, so a table with none left (a default filled them) stays so.
        """
        if self._always_needed():
            return True
        cursor = conn.connection.cursor()
        cursor.execute(
            f"SELECT EXISTS (SELECT FROM {ident(self.spec.schema, self.spec.table)} "
            f"WHERE ({self.spec.needs}))"
        )
        return bool(scalar(cursor))

    def _pass_rows(self, pass_: int) -> str | None:
        """The rows pass ``pass_`` fills: a share of each page, or all in the last pass."""
        if pass_ >= FINAL_PASS or self.walk is None:
            return None
        index = max(0, pass_ - (FINAL_PASS + 1 - self.pass_count))
        return pass_rows(self.walk, index, self.pass_count)

    def _always_needed(self) -> bool:
        """A spec whose rows always "need" it (an update without ``where``): it cannot
        tell a filled row from one still to fill, so no row may be walked twice."""
        return self.spec.needs.strip().lower() in ("true", "(true)")

    def passes(self, conn: Connection) -> int:
        """How many passes each range is walked in: HOT_PASSES where it pays, else 1.

        A table loaded densely has no room on its pages: updating a row puts the new
        version on another page, and every index gets a new entry for it (and the old
        page a WAL-logged tuple lock). So the first pass fills a third of each page's
        rows (`keys.pass_rows`); once committed, their old versions are dead, and the
        second pass, walking the same range again, finds the pages pruned and puts most
        of the next third's new versions on their own page: heap-only tuple (HOT)
        updates, with no index entry, a smaller WAL record, and no growth of the table.
        The third pass finds the second's old versions gone in turn. The range's earlier
        pass is long done by then (other workers' batches too, which would otherwise
        still hold the old versions visible).

        Measured (3M rows, one session, batches of 25,000): 0% of the updates HOT and
        289k rows/s in one pass, 38% and 337-349k in two, 54% and 353-361k in three,
        60% and 323-328k in four (the fourth walk costs more than it saves).

        One pass when HOT is impossible (an index covers a column the fill writes) or
        when a later pass would fill rows twice (a fill whose rows always need it).
        """
        if self._always_needed():
            return 1
        try:
            indexed = indexed_columns(conn, self.spec.schema, self.spec.table)
        except ValueError:  # an index expression pglast cannot read: assume the worst
            return 1
        return 1 if indexed & set(self.spec.set) else HOT_PASSES

    # -- running -----------------------------------------------------------------------

    def run(self) -> Outcome:
        """Walk every range with ``settings.workers`` threads; resumable at any moment."""
        with connect(self.engine) as conn:
            leaves = leaf_partitions(conn, self.spec.schema, self.spec.table)
        if leaves:
            return self._run_partitions(leaves)
        started = time.monotonic()
        walk = self.walk or self.prepare()
        passes = 1
        try:
            with connect(self.engine) as conn:
                planned = self.store.summary(conn).ranges
            # No range planned: no row needed the fill (see `prepare`).
            while planned:
                self._run_pass()
                # A spec whose rows are always needed gets one sweep, as it gets one pass.
                if walk.keyset or self._always_needed() or self._sweep_done(passes):
                    break
                passes += 1
            with connect(self.engine) as conn:
                summary = self.store.summary(conn)
                self._save(conn, summary, rate=None, final=True, started=started)
            self._progress(summary, None)
        except BaseException:
            # Ctrl-C, SIGTERM or a failed batch: the workers have stopped, each after
            # its batch in flight, so the ranges hold the truth; write it to the step's
            # checkpoint on the way out, or `migrator status` would show the rows of
            # the last report, up to REPORT_INTERVAL old.
            self._save_on_the_way_out()
            raise
        finally:
            self.engine.dispose()
        return Outcome(
            summary.rows,
            summary.batches,
            self.total,
            walk.describe(),
            time.monotonic() - started,
            passes,
        )

    def _run_partitions(self, leaves: list[tuple[str, str]]) -> Outcome:
        """Fill a partitioned table one leaf partition at a time, each its own step.

        A partition's walk (its primary key, a unique key, or its own pages) and ranges
        are its own, so a partition without a key is walked by ctid, which a partitioned
        table as a whole cannot be. Its step record lets a rerun skip it once done.
        """
        started = time.monotonic()
        rows = batches = total = 0
        passes = 1
        walks: list[str] = []
        try:
            with connect(self.engine) as conn:
                records = {r.key: r for r in STATE.steps(conn, self.release, "backfill")}
                mine = records.get(self.key)
                position = mine.position if mine is not None else 0

            def mark(key: str, description: str, status: str, error: str | None = None) -> None:
                with connect(self.engine) as conn:
                    STATE.mark_step(
                        conn, self.release, "backfill", key, position, description, status, error
                    )
                    conn.commit()

            for schema, leaf in leaves:
                # A leaf in another schema than the table's whose name another leaf has
                # too is keyed with its schema: the two would share a step record, and
                # a rerun would skip the second as done. Every other leaf keeps the key
                # it always had, so a release started before resumes where it was (walked
                # again under a new key, an `updates` step without `where:`, whose rows
                # always need it, would update them twice).
                shared = any(n == leaf and s != schema for s, n in leaves)
                name = f"{schema}.{leaf}" if schema != self.spec.schema and shared else leaf
                key = f"{self.key}/{name}"
                record = records.get(key)
                description = f"{self.spec.description or self.spec.table}: partition {name}"
                if record is not None and record.status == "done" and not self.restart:
                    self.observer.step_skipped(key, description)
                    continue
                mark(key, description, "running")
                self.observer.step_started(key, description)
                part = Backfill(
                    self.engine,
                    replace(self.spec, schema=schema, table=leaf, description=description),
                    release=self.release,
                    key=key,
                    settings=self.settings,
                    observer=self.observer,
                    reader=self.reader,
                    restart=self.restart or (record is not None and record.status == "undone"),
                )
                try:
                    outcome = part.run()
                except Exception as exc:
                    mark(key, description, "failed", str(exc))
                    raise
                mark(key, description, "done")
                self.observer.step_done(key, description, outcome.seconds)
                rows += outcome.rows
                batches += outcome.batches
                total += outcome.total
                passes = max(passes, outcome.passes)
                walks.append(f"{name}: {outcome.walk}")
                with connect(self.engine) as conn:
                    STATE.save_checkpoint(
                        conn,
                        self.release,
                        "backfill",
                        self.key,
                        {
                            "walk": "per partition",
                            "rows": rows,
                            "total": total,
                            "batches": batches,
                            "partitions": len(leaves),
                            "partitions_done": len(walks),
                            "updated_at": _now(),
                        },
                    )
                    conn.commit()
        finally:
            self.engine.dispose()
        return Outcome(
            rows,
            batches,
            total,
            "per partition (" + "; ".join(walks) + ")",
            time.monotonic() - started,
            passes,
        )

    def _run_pass(self) -> None:
        shared = self._shared
        shared.stop.clear()
        # Each worker sets its event as its very last act, its session closed. The main
        # thread waits on these, never in Thread.join: before Python 3.13 a Ctrl-C or
        # SIGTERM that lands in a join marks the thread as ended while it still runs
        # (threading's bpo-45274 handler), so the next join returned at once and the
        # checkpoint was written before the batch in flight committed.
        ended = [threading.Event() for _ in range(max(1, self.settings.workers))]
        threads = [
            threading.Thread(target=self._work, args=(n, done), name=f"backfill-{n}", daemon=True)
            for n, done in enumerate(ended)
        ]
        # Look before the first batch: a lagging replica stops the run from the start.
        with connect(self.engine) as conn:
            self._resolve_limits(conn)
            self._decide(conn, [])
        for thread in threads:
            thread.start()
        try:
            self._monitor(ended)
        except BaseException:
            shared.stop.set()
            for done in ended:
                done.wait()
            raise
        for done in ended:
            done.wait()
        if shared.errors:
            raise shared.errors[0]

    def _monitor(self, ended: list[threading.Event]) -> None:
        """Read the load, decide, report progress, until the workers are done."""
        shared = self._shared
        samples: deque[tuple[float, int]] = deque()
        last_report = 0.0
        with connect(self.engine) as conn:
            while not all(done.is_set() for done in ended):
                with shared.lock:
                    pids = sorted(shared.pids)
                self._decide(conn, pids)
                now = time.monotonic()
                if now - last_report >= REPORT_INTERVAL:
                    last_report = now
                    summary = self.store.summary(conn)
                    samples.append((now, summary.rows))
                    while samples and now - samples[0][0] > RATE_WINDOW:
                        samples.popleft()
                    rate = _rate(samples)
                    self._save(conn, summary, rate=rate)
                    self._progress(summary, rate)
                for done in ended:
                    done.wait(MONITOR_INTERVAL / len(ended))

    def _resolve_limits(self, conn: Connection) -> None:
        """The slots' WAL limit, read once a run (a share of the disk's free space)."""
        if self.limits is not self.settings.limits:
            return
        limit, how = throttle.retained_wal_limit(conn, self.settings.retained_wal)
        self.limits = replace(self.settings.limits, max_retained_wal=limit)
        if self.settings.retained_wal != "off":
            with self._observe:
                self.observer.info(f"backfill {self.key}: {how}")

    def _decide(self, conn: Connection, pids: list[int]) -> None:
        shared = self._shared
        readings = self.reader(conn, pids)
        if readings.unreadable and not self._unreadable_told:
            self._unreadable_told = True
            with self._observe:
                self.observer.warning(f"backfill {self.key}: {readings.unreadable}")
        decision = throttle.decide(readings, self.limits, shared.decision)
        if decision.action != shared.decision.action:
            self._tell_throttle(decision)
        with shared.lock:
            shared.decision = decision

    def _tell_throttle(self, decision: throttle.Decision) -> None:
        with self._observe:
            if decision.action == "go":
                self.observer.info(f"backfill {self.key}: load is back under the limits")
            else:
                verb = "pausing" if decision.action == "pause" else "slowing down"
                self.observer.warning(f"backfill {self.key}: {verb}: {decision.reason}")

    def _save_on_the_way_out(self) -> None:
        if self.walk is None:
            return
        try:
            with connect(self.engine) as conn:
                self._save(conn, self.store.summary(conn), rate=None)
        except Exception:
            pass  # the error under way is the one to report

    def _progress(self, summary: Summary, rate: float | None) -> None:
        left = max(self.total - summary.rows, 0)
        with self._observe:
            self.observer.progress(
                self.key,
                summary.rows,
                self.total or None,
                rate=rate,
                eta=(left / rate) if rate else None,
                batches=summary.batches,
                ranges=summary.ranges,
                ranges_done=summary.done,
                batch_size=self._shared.batch_size,
                throttle=self._shared.decision.action,
            )

    def _save(
        self,
        conn: Connection,
        summary: Summary,
        *,
        rate: float | None,
        final: bool = False,
        started: float = 0.0,
    ) -> None:
        if final:
            elapsed = max(time.monotonic() - started, 1e-6)
            rate = self._shared.rows_here / elapsed
        assert self.walk is not None
        left = max(self.total - summary.rows, 0)
        checkpoint: dict[str, Any] = {
            "walk": _walk_json(self.walk),
            "rows": summary.rows,
            "total": self.total,
            "rate": round(rate, 1) if rate is not None else None,
            "eta": round(left / rate, 1) if rate and not final else None,
            "batches": summary.batches,
            "ranges": summary.ranges,
            "ranges_done": summary.done,
            "passes": self.pass_count,
            "batch_ends": "key steps" if self.stepping else "index",
            "workers": self.settings.workers,
            "batch_size": self._shared.batch_size,
            "throttle": self._shared.decision.reason or self._shared.decision.action,
            "updated_at": _now(),
        }
        STATE.save_checkpoint(conn, self.release, "backfill", self.key, checkpoint)
        conn.commit()

    def _work(self, number: int, ended: threading.Event) -> None:
        """One worker's claims and batches until the ranges are done or the run stops;
        ``ended`` is set once its session is closed (`_run_pass` waits on it)."""
        shared = self._shared
        worker = f"{self.worker_id}:{number}"
        pid: int | None = None
        try:
            with connect(self.engine) as conn:
                pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
                conn.commit()
                with shared.lock:
                    shared.pids.add(pid)
                # One sizer per pass: an early pass's batch fills a share of what it walks.
                sizers: defaultdict[int, BatchSizer] = defaultdict(self._sizer)
                # The ranges this worker walks, their passes taken in turn: a range's
                # next pass starts a whole pass of the other range after its last one
                # ended, when the batches other workers were running then are over too.
                # (Started at once, it finds the pages the last batch touched still
                # unpruned: those old versions stay visible to a batch that began before
                # that commit, and HOT fails. 2 workers, 10M rows, 3 runs each: 54% of
                # the updates HOT in turn, as with one worker, against 42-47% range by
                # range; the rows/s did not change measurably.)
                walks: deque[tuple[Range, Iterator[None]]] = deque()
                while not shared.stop.is_set():
                    while len(walks) < RANGES_IN_TURN:
                        held = [rng.n for rng, _ in walks]
                        claimed = self.store.claim(conn, worker, skip=held)
                        if claimed is None:
                            break
                        walks.append((claimed, self._walk_range(conn, claimed, sizers)))
                    if not walks:
                        if self.store.summary(conn).finished:
                            return
                        # Other workers hold the rest; one may die and free its range.
                        shared.stop.wait(IDLE_POLL)
                        continue
                    rng, passes = walks.popleft()
                    if next(passes, _DONE) is _DONE:
                        self.store.release_claim(conn, rng)
                    else:
                        walks.append((rng, passes))
        except BaseException as exc:
            with shared.lock:
                shared.errors.append(exc)
            shared.stop.set()
        finally:
            if pid is not None:
                with shared.lock:
                    shared.pids.discard(pid)
            ended.set()

    def _sizer(self) -> BatchSizer:
        keyset = self.walk is None or self.walk.keyset
        return BatchSizer(
            fixed=self.settings.batch_size,
            target=self.settings.target_batch_time,
            start=1000 if keyset else 10,
            low=10 if keyset else 1,
            high=500_000 if keyset else 20_000,
        )

    def _walk_range(
        self, conn: Connection, rng: Range, sizers: dict[int, BatchSizer]
    ) -> Iterator[None]:
        """Walk a claimed range to its end; yields after each pass but the last."""
        shared = self._shared
        position, pass_ = rng.start, rng.pass_
        # Where the first pass's batches ended: later passes walk the same slices
        # without looking for their ends again. (That look, an index scan, is cheap on
        # untouched pages but costs a heap visit per key once a pass has touched them.)
        # Kept in memory: a later pass resumed elsewhere looks again.
        ends: list[Any] = []
        # Only a first pass walked here from the range's start tells the slices from it.
        first = pass_
        whole = pass_ < FINAL_PASS and rng.position is None and bool(self.walk and self.walk.keyset)
        done = 0  # batches of this pass so far
        while not shared.stop.is_set():
            if not self._obey_throttle():
                return
            planned = ends[done] if pass_ != first and done < len(ends) else None
            batch = self._batch(conn, rng, position, sizers[pass_], pass_, planned)
            done += 1
            with shared.lock:
                shared.rows_here += batch.updated
                shared.batch_size = sizers[pass_].size
            if pass_ == first and whole and not batch.last:
                ends.append(batch.position)
            if batch.last:
                if pass_ >= FINAL_PASS:
                    return
                # The checkpoint moved the range to its next pass, from its start.
                position, pass_, done = rng.lo, pass_ + 1, 0
                yield
                continue
            position = batch.position
            if self.settings.pause:
                shared.stop.wait(self.settings.pause)

    def _obey_throttle(self) -> bool:
        """Wait as the current decision says; False when the run is stopping."""
        shared = self._shared
        while not shared.stop.is_set():
            decision = shared.decision
            if decision.action == "pause":
                shared.stop.wait(decision.sleep)
                continue
            if decision.action == "slow":
                # Sleep in short steps: when the load is gone, go at once.
                until = time.monotonic() + decision.sleep
                while not shared.stop.is_set() and shared.decision.action == "slow":
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    shared.stop.wait(min(left, 0.05))
            return not shared.stop.is_set()
        return False

    def _batch(
        self,
        conn: Connection,
        rng: Range,
        position: Any,
        sizer: BatchSizer,
        pass_: int,
        planned: Any = None,
    ) -> Batch:
        """One batch of pass ``pass_`` and its checkpoint in one transaction, retried on
        lock races. A key walk's batch ends at ``planned`` when it is given."""
        policy = self.settings.policy
        only = self._pass_rows(pass_)
        attempt = 0
        while True:
            size = sizer.size
            try:
                with conn.begin():
                    cursor = conn.connection.cursor()
                    timeout = f"{round(self.settings.lock_timeout * 1000)}ms"
                    cursor.execute(f"SET LOCAL lock_timeout = {literal(timeout)}")
                    if self._schema_first is not None:
                        cursor.execute(self._schema_first)
                    if self.walk is not None and not self.walk.keyset:
                        batch = ctid_batch(
                            cursor, self.spec, int(position or 0), _int(rng.hi), size, only
                        )
                    elif planned is not None:
                        assert self.walk is not None
                        batch = keyset_batch_to(
                            cursor, self.spec, self.walk, position, planned, only
                        )
                    elif self.stepping and position is not None and rng.hi is not None:
                        assert self.walk is not None
                        hi, last = step_end(_key(position) or [], size, _key(rng.hi) or [])
                        batch = keyset_batch_to(
                            cursor, self.spec, self.walk, position, hi, only, last=last
                        )
                    else:
                        assert self.walk is not None
                        batch = keyset_batch(
                            cursor, self.spec, self.walk, position, _key(rng.hi), size, only
                        )
                    if pass_ < FINAL_PASS and batch.last:
                        # This pass is over: the next starts at the range's start.
                        self.store.checkpoint(conn, rng, None, batch.updated, False, pass_ + 1)
                    else:
                        self.store.checkpoint(
                            conn, rng, batch.position, batch.updated, batch.last, pass_
                        )
                if not batch.last and planned is None and (batch.updated or not self.stepping):
                    # A range's last batch is cut short by the range's end: its time says
                    # nothing about a full batch (nor does one of planned length, nor a
                    # step over a gap in the keys, which would grow the next step past
                    # the rows the target time allows).
                    sizer.record(size, batch.seconds)
                return batch
            except (DBAPIError, psycopg.Error) as exc:
                # The raw cursor raises psycopg's errors, SQLAlchemy calls its own.
                state = sqlstate(exc)
                if not isinstance(exc, DBAPIError):
                    note_statement(exc, "UPDATE")  # a batch: names a missing privilege
                reason = describe_db_error(exc, self.engine.url)
                if state in RETRYABLE and attempt < policy.retries:
                    attempt += 1
                    wait = policy.wait(attempt)
                    sizer.shrink()
                    with self._observe:
                        self.observer.retry(f"{self.key} range {rng.n}", attempt, wait, reason)
                    policy.sleep(wait)
                    continue
                table = ident(self.spec.schema, self.spec.table)
                if state in RETRYABLE:
                    raise LockNotAcquired(
                        f"backfill {self.key}: a batch of {table} could not take its row locks "
                        f"within lock_timeout {format_duration(self.settings.lock_timeout)} "
                        f"after {attempt} retries ({reason}); rerun to resume"
                    ) from None
                raise StepFailed(f"backfill of {table}: {reason}", step=self.key) from None

    def _sweep_done(self, passes: int) -> bool:
        """After a ctid pass: True when no row needs filling any more, else reset ranges.

        Rows an update moved to a page already walked (the old version changing a
        column the fill does not read) escape a page walk; a second pass finds them.
        """
        with connect(self.engine) as conn:
            with conn.begin():
                self.store.lock_step(conn)
                cursor = conn.connection.cursor()
                cursor.execute(
                    f"SELECT count(*) FROM {ident(self.spec.schema, self.spec.table)} "
                    f"WHERE ({self.spec.needs})"
                )
                remaining = int(scalar(cursor))
                if remaining == 0:
                    return True
                if passes >= MAX_PASSES:
                    raise StepFailed(
                        f"backfill {self.key}: {remaining} rows still need filling after "
                        f"{passes} passes over the pages; writers keep leaving rows unfilled",
                        step=self.key,
                    )
                if self.store.summary(conn).finished:
                    self.store.reset(conn)
        with self._observe:
            self.observer.info(
                f"backfill {self.key}: {remaining} rows moved while the pages were walked; "
                f"pass {passes + 1}"
            )
        return False


def _walk_json(walk: Walk) -> dict[str, Any]:
    return {"kind": walk.kind, "columns": [c.name for c in walk.columns]}


def _rate(samples: deque[tuple[float, int]]) -> float | None:
    if len(samples) < 2:
        return None
    (t0, r0), (t1, r1) = samples[0], samples[-1]
    return (r1 - r0) / (t1 - t0) if t1 > t0 else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _key(value: Any) -> list[str] | None:
    return None if value is None else [str(v) for v in value]


def settings_from_plan(plan: Plan, workers: int = 1) -> Settings:
    """The run settings a plan asks for, with ``workers`` threads in this process."""
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    cfg = plan.backfill
    return Settings(
        batch_size=cfg.batch_size if isinstance(cfg.batch_size, int) else None,
        target_batch_time=cfg.target_batch_time,
        pause=cfg.pause,
        lock_timeout=plan.database.lock_timeout,
        limits=throttle.Limits(
            max_replication_lag=cfg.max_replication_lag,
            max_active_sessions=cfg.max_active_sessions,
            max_lock_waits=cfg.max_lock_waits,
            target_batch_time=cfg.target_batch_time,
            max_replication_lag_bytes=cfg.max_replication_lag_bytes,
        ),
        retained_wal=cfg.max_retained_wal,
        policy=RetryPolicy(retries=plan.database.retries),
        workers=workers,
    )
