"""The backfill runner on a real PostgreSQL: how it walks tables (composite keys,
unique keys, ctid pages), what it never overwrites, workers and cooperating processes,
and a writer process of both versions running throughout."""

from __future__ import annotations

import json
import multiprocessing
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migrator import commands
from migrator.backfill.runner import HOT_PASSES
from migrator.errors import LockNotAcquired
from migrator.observer import Observer
from migrator.plan.loader import parse_plan
from migrator.plan.models import Plan

UP = "coalesce(legacy_phone, '')"


def plan_text(
    table: str = "users",
    *,
    batch: str = "auto",
    pause: str = "0s",
    up: str = UP,
    release: str = "r1",
    extra: str = "",
) -> str:
    """A release adding ``phone`` to ``table``, filled from legacy_phone."""
    return f"""
release: {release}
database: {{lock_timeout: 500ms, retries: 20}}
expand:
  - add_column:
      table: {table}
      column: {{name: phone, type: text}}
      up: "{up}"
backfill: {{batch_size: {batch}, pause: {pause}, target_batch_time: 50ms{extra}}}
"""


def make_plan(**kwargs: Any) -> Plan:
    return parse_plan(plan_text(**kwargs), "plan.yaml")


def q(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []


class Recorder(Observer):
    """Keeps what the engine reports."""

    def __init__(self) -> None:
        self.progress_events: list[tuple[int, int | None, dict[str, Any]]] = []
        self.warnings: list[str] = []
        self.retries: list[str] = []
        self.infos: list[str] = []

    def info(self, message: str) -> None:
        self.infos.append(message)

    def progress(self, task: str, done: int, total: int | None, **extra: Any) -> None:
        self.progress_events.append((done, total, extra))

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
        self.retries.append(reason)


def opts(url: str, observer: Observer | None = None) -> commands.Options:
    return commands.Options(database_url=url, observer=observer or Observer())


def wrong_rows(url: str, table: str = "users") -> int:
    """Rows whose phone is not what the fill expression gives (a v2 value excepted)."""
    return int(
        q(
            url,
            f"SELECT count(*) FROM {table} WHERE phone IS DISTINCT FROM "
            f"coalesce(legacy_phone, '') AND phone IS DISTINCT FROM 'v2'",
        )[0][0]
    )


def checkpoint(url: str) -> dict[str, Any]:
    rows = q(url, "SELECT checkpoint FROM migrator.steps WHERE phase = 'backfill'")
    assert rows, "no backfill step recorded"
    return dict(rows[0][0])


SEEDS = {
    "composite": """
        CREATE TABLE users (tenant int, id int, legacy_phone text, PRIMARY KEY (tenant, id));
        INSERT INTO users SELECT g % 7, g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'p' || g END
        FROM generate_series(1, 20000) g;
    """,
    "text-uuid": """
        CREATE TABLE users (region text, uid uuid, legacy_phone text,
                            PRIMARY KEY (region, uid));
        INSERT INTO users SELECT 'r' || (g % 13), md5(g::text)::uuid, 'p' || g
        FROM generate_series(1, 20000) g;
    """,
    "unique": """
        CREATE TABLE users (code text NOT NULL UNIQUE, other int UNIQUE, legacy_phone text);
        INSERT INTO users SELECT 'c' || g, g, 'p' || g FROM generate_series(1, 20000) g;
    """,
    # A dense integer key (40,000 rows over 50,000 values) with a gap of 10,000.
    "integer": """
        CREATE TABLE users (id bigint PRIMARY KEY, legacy_phone text);
        INSERT INTO users SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'p' || g END
        FROM generate_series(1, 50000) g WHERE g NOT BETWEEN 20001 AND 30000;
        ANALYZE users;
    """,
    "ctid": """
        CREATE TABLE users (code text UNIQUE, legacy_phone text);
        INSERT INTO users SELECT 'c' || g, 'p' || g FROM generate_series(1, 20000) g;
    """,
}
WALKS = {
    "composite": ("primary key", ["tenant", "id"]),
    "text-uuid": ("primary key", ["region", "uid"]),
    "unique": ("unique key", ["code"]),
    "integer": ("primary key", ["id"]),
    "ctid": ("ctid", []),
}
ROWS = {"integer": 40000}


@pytest.mark.parametrize("shape", sorted(SEEDS))
def test_walks_every_table_shape(fresh_db: str, shape: str) -> None:
    q(fresh_db, SEEDS[shape])
    plan = make_plan()
    commands.expand(plan, opts(fresh_db))
    # Rows the new version already wrote: the backfill must keep them.
    q(fresh_db, "UPDATE users SET phone = 'v2' WHERE legacy_phone LIKE '%7'")
    kept = q(fresh_db, "SELECT count(*) FROM users WHERE phone = 'v2'")[0][0]
    versions = q(fresh_db, "SELECT ctid, xmin::text FROM users WHERE phone = 'v2' ORDER BY 1")
    recorder = Recorder()
    result = commands.backfill(plan, opts(fresh_db, recorder))
    assert wrong_rows(fresh_db) == 0
    # Rows that did not need it were not even rewritten (same tuple, same xmin).
    assert q(fresh_db, "SELECT ctid, xmin::text FROM users WHERE phone = 'v2' ORDER BY 1") == (
        versions
    )
    assert q(fresh_db, "SELECT count(*) FROM users WHERE phone = 'v2'")[0][0] == kept > 0
    rows = ROWS.get(shape, 20000)
    assert result.rows == rows - kept
    cp = checkpoint(fresh_db)
    kind, columns = WALKS[shape]
    assert cp["walk"] == {"kind": kind, "columns": columns}
    assert cp["rows"] == cp["total"] == rows - kept
    assert cp["batch_ends"] == ("key steps" if shape == "integer" else "index")
    assert recorder.progress_events, "no progress reported"


def hot_share(url: str, shape: str, before_backfill: str = "") -> float:
    """Backfill a table of ``shape`` (vacuumed: pages full) and return the share of
    updates that were heap-only."""
    q(url, SEEDS[shape])
    q(url, "VACUUM (ANALYZE) users")
    plan = make_plan()
    commands.expand(plan, opts(url))
    if before_backfill:
        q(url, before_backfill)
    counters = (
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
        "WHERE relid = 'public.users'::regclass"
    )
    before = q(url, counters)[0]
    result = commands.backfill(plan, opts(url))
    assert wrong_rows(url) == 0
    # The engine's sessions report their counts as they end: wait for them.
    deadline = time.monotonic() + 10
    while True:
        upd, hot = (a - b for a, b in zip(q(url, counters)[0], before, strict=True))
        if upd >= result.rows or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert upd == result.rows
    return hot / upd


@pytest.mark.parametrize("shape", ["composite", "text-uuid", "ctid"])
def test_later_passes_make_most_updates_heap_only(fresh_db: str, shape: str) -> None:
    """Each pass but the last fills a share of each page's rows; committed, their old
    versions are pruned, and the next pass finds room on the page: HOT updates, with
    no new index entries. (Measured here: 39% to 84% of all updates, by table shape.)"""
    hot = hot_share(fresh_db, shape)
    assert checkpoint(fresh_db)["passes"] == HOT_PASSES
    assert q(fresh_db, "SELECT DISTINCT pass FROM migrator.backfill_ranges") == [(2,)]
    assert hot > 0.25, f"only {hot:.0%} of the updates were heap-only"


def test_one_pass_when_an_index_covers_the_filled_column(fresh_db: str) -> None:
    """HOT is impossible when the fill changes an indexed column: one pass, no second walk."""
    hot = hot_share(fresh_db, "composite", "CREATE INDEX users_phone_lower ON users (lower(phone))")
    assert checkpoint(fresh_db)["passes"] == 1
    assert hot == 0


def test_state_made_before_two_passes_is_upgraded(fresh_db: str) -> None:
    """A state schema initialised by a migrator without passes gains the column (its
    ranges are walked in one pass, as they were), and init stays rerunnable."""
    q(fresh_db, SEEDS["composite"])
    plan = make_plan()
    commands.expand(plan, opts(fresh_db))
    q(fresh_db, "ALTER TABLE migrator.backfill_ranges DROP COLUMN pass")
    commands.backfill(plan, opts(fresh_db))
    assert wrong_rows(fresh_db) == 0
    assert q(
        fresh_db,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'migrator.backfill_ranges'::regclass "
        "AND attname = 'pass' AND NOT attisdropped",
    ) == [(1,)]


def record_batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any, int, bool]]:
    """Each batch whose end was known before it ran: (lo, hi, rows updated, last)."""
    from migrator.backfill import runner

    seen: list[tuple[Any, Any, int, bool]] = []
    original = runner.keyset_batch_to

    def recording(cursor: Any, spec: Any, walk: Any, lo: Any, hi: Any, *a: Any, **k: Any) -> Any:
        batch = original(cursor, spec, walk, lo, hi, *a, **k)
        seen.append((lo, hi, batch.updated, batch.last))
        return batch

    monkeypatch.setattr(runner, "keyset_batch_to", recording)
    return seen


def test_a_dense_integer_key_is_walked_in_steps(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches along a dense integer key end ``batch_size`` values on, found by
    arithmetic rather than by counting keys through the index: never more rows than
    that, fewer across a gap, and every row filled once."""
    q(fresh_db, SEEDS["integer"])
    plan = make_plan(batch="700")
    commands.expand(plan, opts(fresh_db))
    seen = record_batches(monkeypatch)
    result = commands.backfill(plan, opts(fresh_db))
    assert result.rows == 40000 and wrong_rows(fresh_db) == 0
    assert checkpoint(fresh_db)["batch_ends"] == "key steps"
    steps = [(int(lo[0]), int(hi[0]), n) for lo, hi, n, _ in seen if lo is not None]
    # The first batch of the first range and the open last range look their ends up.
    assert len(steps) > 40000 // 700
    assert all(hi - lo <= 700 and n <= hi - lo for lo, hi, n in steps)
    assert any(n == 0 and lo >= 20000 and hi <= 30001 for lo, hi, n in steps), "no step in the gap"


def test_a_step_over_a_gap_does_not_grow_the_next(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty step takes no time; learning from it would make the next step, past the
    gap, hold many more rows than the target time allows."""
    q(fresh_db, SEEDS["integer"])
    plan = make_plan()
    commands.expand(plan, opts(fresh_db))
    seen = record_batches(monkeypatch)
    commands.backfill(plan, opts(fresh_db))
    assert wrong_rows(fresh_db) == 0
    steps = [(int(lo[0]), int(hi[0]), n, last) for lo, hi, n, last in seen if lo is not None]
    pairs = list(zip(steps, steps[1:], strict=False))
    after_empty = [(lo, hi, hi2) for (lo, hi, n, last), (_, hi2, _, _) in pairs if not (n or last)]
    assert after_empty, "no empty step in the gap"
    for lo, hi, hi2 in after_empty:
        assert hi2 - hi <= hi - lo, f"the step after the empty ({lo}, {hi}] grew"


def test_a_worker_takes_the_passes_of_two_ranges_in_turn(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Range 0's second pass waits for range 1's first: by then no batch that could
    still see the old versions range 0's first pass left is running."""
    from migrator.backfill import runner

    order: list[tuple[int, int]] = []
    original = runner.Backfill._batch

    def recording(
        self: Any, conn: Any, rng: Any, position: Any, sizer: Any, pass_: int, *a: Any
    ) -> Any:
        if not order or order[-1] != (rng.n, pass_):
            order.append((rng.n, pass_))
        return original(self, conn, rng, position, sizer, pass_, *a)

    monkeypatch.setattr(runner.Backfill, "_batch", recording)
    q(fresh_db, SEEDS["composite"])
    q(fresh_db, "VACUUM (ANALYZE) users")
    plan = make_plan()
    commands.expand(plan, opts(fresh_db))
    commands.backfill(plan, opts(fresh_db))
    assert wrong_rows(fresh_db) == 0
    first = runner.FINAL_PASS + 1 - runner.HOT_PASSES
    passes = range(first, runner.FINAL_PASS + 1)
    assert order[: 2 * len(passes)] == [(n, p) for p in passes for n in (0, 1)]
    assert order[2 * len(passes)] == (2, first)


def test_sparse_or_unknown_keys_are_not_stepped(fresh_db: str) -> None:
    from migrator.backfill.keys import choose_walk, dense_integer_key
    from migrator.db.connection import make_engine

    q(
        fresh_db,
        "CREATE TABLE dense (id int PRIMARY KEY); INSERT INTO dense SELECT generate_series(1, 900);"
        "CREATE TABLE sparse (id int PRIMARY KEY);"
        "INSERT INTO sparse SELECT g * 3 FROM generate_series(1, 900) g;"
        "CREATE TABLE texts (id text PRIMARY KEY); INSERT INTO texts VALUES ('a'), ('b');"
        "CREATE TABLE unseen (id int PRIMARY KEY); INSERT INTO unseen VALUES (1), (2);"
        "ANALYZE dense, sparse, texts",
    )
    engine = make_engine(fresh_db)
    try:
        with engine.connect() as conn:
            found = {
                t: dense_integer_key(conn, "public", t, choose_walk(conn, "public", t))
                for t in ("dense", "sparse", "texts", "unseen")
            }
    finally:
        engine.dispose()
    # unseen: never vacuumed or analyzed, so its row count is unknown.
    assert found == {"dense": True, "sparse": False, "texts": False, "unseen": False}


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_size_auto_adapts_to_target_time(fresh_db: str, workers: int) -> None:
    q(
        fresh_db,
        "CREATE TABLE users (id int PRIMARY KEY, legacy_phone text);"
        "INSERT INTO users SELECT g, 'p' || g FROM generate_series(1, 200000) g",
    )
    plan = make_plan()
    commands.expand(plan, opts(fresh_db))
    commands.backfill(plan, opts(fresh_db), workers=workers)
    batches, ranges = q(fresh_db, "SELECT sum(batches), count(*) FROM migrator.backfill_ranges")[0]
    # 48 ranges per worker; with 1 worker 200k rows in ranges of about 4200, each
    # walked in three passes, from a first batch of 1000 that grows (a pass would take
    # 5 batches of 1000 a range): it grew.
    assert ranges == 48 * workers
    assert batches < HOT_PASSES * ranges * 5 * 0.75
    assert checkpoint(fresh_db)["batch_size"] > 1000
    assert wrong_rows(fresh_db) == 0


def test_fixed_batch_size_is_obeyed(fresh_db: str) -> None:
    q(fresh_db, SEEDS["composite"])
    plan = make_plan(batch="500")
    commands.expand(plan, opts(fresh_db))
    commands.backfill(plan, opts(fresh_db))
    batches = q(fresh_db, "SELECT sum(batches) FROM migrator.backfill_ranges")[0][0]
    assert batches >= 20000 // 500
    assert wrong_rows(fresh_db) == 0


def test_rerun_after_done_touches_nothing(fresh_db: str) -> None:
    q(fresh_db, SEEDS["unique"])
    plan = make_plan()
    commands.expand(plan, opts(fresh_db))
    commands.backfill(plan, opts(fresh_db))
    again = commands.backfill(plan, opts(fresh_db))
    assert again.ran == [] and again.skipped


def table_digest(url: str) -> list[tuple[Any, ...]]:
    return q(url, "SELECT tenant, id, legacy_phone, phone FROM users ORDER BY tenant, id")


def test_workers_give_the_single_workers_result(pg_server: Any) -> None:
    results = []
    for workers in (1, 3):
        url = pg_server.create_database("w")
        try:
            q(url, SEEDS["composite"])
            q(url, "UPDATE users SET legacy_phone = NULL WHERE id % 11 = 0")
            plan = make_plan(batch="300", pause="10ms")
            commands.expand(plan, opts(url))
            q(url, "UPDATE users SET phone = 'v2' WHERE id % 13 = 0")
            commands.backfill(plan, opts(url), workers=workers)
            results.append(table_digest(url))
            workers_seen = q(url, "SELECT count(DISTINCT worker) FROM migrator.backfill_ranges")[0][
                0
            ]
            assert workers_seen == workers
        finally:
            pg_server.drop_database(url)
    assert results[0] == results[1]
    assert len(results[0]) == 20000


def test_processes_cooperate_through_the_range_table(fresh_db: str, tmp_path: Path) -> None:
    """Two `migrator backfill` processes on one release share the work, like Job pods."""
    q(fresh_db, SEEDS["composite"])
    text = plan_text(batch="200", pause="20ms")
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    commands.expand(parse_plan(text, str(path)), opts(fresh_db))
    command = [sys.executable, "-m", "migrator", "backfill", str(path)]
    command += ["--database-url", fresh_db, "--workers", "2", "--json"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    time.sleep(0.3)
    procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        events = [json.loads(line) for line in out.decode().splitlines()]
        progress = [e for e in events if e["event"] == "progress"]
        assert progress and progress[-1]["total"] == 20000
        assert {"rate", "eta", "batches"} <= set(progress[-1])
    assert wrong_rows(fresh_db) == 0
    assert q(fresh_db, "SELECT count(*) FROM users WHERE phone IS NULL")[0][0] == 0
    processes = q(
        fresh_db,
        "SELECT count(DISTINCT split_part(worker, ':', 2)) FROM migrator.backfill_ranges",
    )[0][0]
    assert processes == 2, "the second process claimed no range"
    assert q(fresh_db, "SELECT status FROM migrator.steps WHERE phase = 'backfill'") == [("done",)]


# -- a writer process of both versions, running throughout ----------------------------------


WRITER_SEED = """
CREATE TABLE users (id bigint {key}, legacy_phone text, note int NOT NULL DEFAULT 0,
                    last_writer text NOT NULL DEFAULT 'seed');
{index}
INSERT INTO users (id, legacy_phone)
SELECT g, CASE WHEN g % 6 = 0 THEN NULL ELSE 'p' || g END FROM generate_series(1, 30000) g;
"""


def writer(url: str, stop: Any, count: Any, seed: int) -> None:
    """Old (v1) and new (v2) version statements, as fast as they go, until told to stop.

    v1 knows nothing of ``phone``: it inserts without it and updates legacy_phone (the
    sync trigger fills phone) or just ``note``. v2 writes phone itself. ``last_writer``
    says which version wrote a row last, so the final table can be checked exactly.
    """
    rng = random.Random(seed)
    next_id = 1_000_000 + seed * 100_000
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '5s'")
        while not stop.is_set():
            target = rng.randint(1, 30000)
            kind = rng.random()
            try:
                if kind < 0.15:
                    next_id += 1
                    conn.execute(
                        "INSERT INTO users (id, legacy_phone, last_writer) VALUES (%s, %s, 'v1')",
                        (next_id, rng.choice([None, f"n{next_id}"])),
                    )
                elif kind < 0.25:
                    next_id += 1
                    conn.execute(
                        "INSERT INTO users (id, legacy_phone, phone, last_writer) "
                        "VALUES (%s, %s, 'v2', 'v2')",
                        (next_id, f"n{next_id}"),
                    )
                elif kind < 0.55:
                    # Always a change (the trigger recomputes on changed sources only).
                    next_id += 1
                    conn.execute(
                        "UPDATE users SET legacy_phone = CASE WHEN legacy_phone IS NULL "
                        "THEN %s ELSE %s END, last_writer = 'v1' WHERE id = %s",
                        (f"u{next_id}", rng.choice([None, f"u{next_id}"]), target),
                    )
                elif kind < 0.75:
                    # v1 changing a column the fill does not read: the row moves (a new
                    # tuple), and its phone stays as it was.
                    conn.execute(
                        "UPDATE users SET note = note + 1 WHERE id = %s AND last_writer <> 'v2'",
                        (target,),
                    )
                else:
                    conn.execute(
                        "UPDATE users SET phone = 'v2', last_writer = 'v2' WHERE id = %s",
                        (target,),
                    )
                with count.get_lock():
                    count.value += 1
            except psycopg.errors.LockNotAvailable:
                pass


@pytest.mark.parametrize("walk", ["primary key", "ctid"])
def test_backfill_under_a_writer_of_both_versions(fresh_db: str, walk: str) -> None:
    if walk == "primary key":
        q(fresh_db, WRITER_SEED.format(key="PRIMARY KEY", index=""))
    else:
        # A plain (non-unique) index: the writer finds rows fast, the backfill walks pages.
        q(fresh_db, WRITER_SEED.format(key="NOT NULL", index="CREATE INDEX ON users (id);"))
    plan = make_plan(batch="250", pause="5ms")
    commands.expand(plan, opts(fresh_db))
    ctx = multiprocessing.get_context("spawn")
    stop, count = ctx.Event(), ctx.Value("i", 0)
    procs = [ctx.Process(target=writer, args=(fresh_db, stop, count, n)) for n in range(2)]
    for proc in procs:
        proc.start()
    try:
        # A limit for a writer that never starts, not a pace: spawned processes on a
        # busy machine took over 30 s to write 200 rows here.
        deadline = time.monotonic() + 180
        while count.value < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = count.value
        assert before >= 200, "the writer did not get going"
        recorder = Recorder()
        commands.backfill(plan, opts(fresh_db, recorder))
        during = count.value - before
        time.sleep(0.3)  # the writer goes on after the backfill, too
    finally:
        stop.set()
        for proc in procs:
            proc.join(30)
    assert all(proc.exitcode == 0 for proc in procs)
    assert during > 100, f"the writer only wrote {during} times during the backfill"
    assert checkpoint(fresh_db)["walk"]["kind"] == walk
    wrong = q(
        fresh_db,
        "SELECT id, legacy_phone, phone, last_writer FROM users WHERE phone IS DISTINCT FROM "
        "CASE WHEN last_writer = 'v2' THEN 'v2' ELSE coalesce(legacy_phone, '') END LIMIT 5",
    )
    assert wrong == []
    assert q(fresh_db, "SELECT count(*) FROM users WHERE phone IS NULL")[0][0] == 0
    assert q(fresh_db, "SELECT count(*) FROM users WHERE last_writer = 'v2'")[0][0] > 0


def test_ranges_follow_the_key_order_not_its_text(fresh_db: str) -> None:
    """Keys travel as text; ordering must still be the index's (9 < 10, not '9' > '10')."""
    q(fresh_db, SEEDS["composite"])
    plan = make_plan()
    commands.expand(plan, opts(fresh_db))
    commands.backfill(plan, opts(fresh_db))
    bounds = q(fresh_db, "SELECT lo, hi FROM migrator.backfill_ranges ORDER BY n")
    keys = [tuple(int(v) for v in hi) for _, hi in bounds[:-1]]
    assert keys == sorted(keys) and len(keys) >= 8
    assert bounds[0][0] is None and bounds[-1][1] is None
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))
    # Ranges hold similar shares of the table (a sample of many pages, not a few).
    sizes = [r[0] for r in q(fresh_db, "SELECT rows FROM migrator.backfill_ranges ORDER BY n")]
    assert max(sizes) < 4 * (20000 / len(sizes))


def test_a_batch_that_meets_a_row_lock_times_out_and_retries(fresh_db: str) -> None:
    q(fresh_db, SEEDS["composite"])
    plan = make_plan(batch="2000")
    commands.expand(plan, opts(fresh_db))
    holder = psycopg.connect(fresh_db)
    holder.execute("UPDATE users SET legacy_phone = 'held' WHERE tenant = 3 AND id = 10")

    class CommitOnRetry(Recorder):
        # The application's transaction commits once a batch has timed out on its lock
        # (lock_timeout is 500ms): the event, not a timer, so a slow machine that
        # reaches the row late still meets the lock.
        def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
            super().retry(step, attempt, wait, reason)
            if holder.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
                holder.commit()

    recorder = CommitOnRetry()
    try:
        commands.backfill(plan, opts(fresh_db, recorder))
    finally:
        holder.close()
    assert recorder.retries and "lock timeout" in recorder.retries[0]
    assert wrong_rows(fresh_db) == 0
    assert q(fresh_db, "SELECT phone FROM users WHERE tenant = 3 AND id = 10") == [("held",)]


def test_retries_exhausted_fail_the_step_and_keep_the_checkpoint(fresh_db: str) -> None:
    q(fresh_db, SEEDS["composite"])
    text = plan_text(batch="2000").replace("retries: 20", "retries: 1").replace("500ms", "100ms")
    plan = parse_plan(text, "plan.yaml")
    commands.expand(plan, opts(fresh_db))
    with psycopg.connect(fresh_db) as holder:
        holder.execute("SELECT * FROM users WHERE tenant = 6 FOR UPDATE")
        with pytest.raises(LockNotAcquired, match="rerun to resume"):
            commands.backfill(plan, opts(fresh_db))
        holder.rollback()
    step = q(fresh_db, "SELECT status, error FROM migrator.steps WHERE phase = 'backfill'")
    assert step[0][0] == "failed" and "lock_timeout" in step[0][1]
    failed = q(fresh_db, "SELECT details FROM migrator.events WHERE action = 'backfill.failed'")
    assert len(failed) == 1 and "lock_timeout" in failed[0][0]["error"], failed
    assert failed[0][0]["step"] == "0.add_column.backfill"
    before = q(fresh_db, "SELECT count(*) FROM users WHERE phone IS NOT NULL")[0][0]
    assert 0 < before < 20000
    commands.backfill(plan, opts(fresh_db))
    assert wrong_rows(fresh_db) == 0
    assert q(fresh_db, "SELECT status FROM migrator.steps WHERE phase = 'backfill'") == [("done",)]


def test_backfills_share_the_lock_other_commands_do_not(fresh_db: str) -> None:
    from migrator.backfill.lease import SharedLock
    from migrator.db.connection import make_engine
    from migrator.engine.lock import AdvisoryLock

    q(fresh_db, SEEDS["unique"])
    plan = make_plan()
    commands.expand(plan, opts(fresh_db))
    engine = make_engine(fresh_db)
    try:
        with SharedLock(engine, "migrator backfill r1"):
            with pytest.raises(LockNotAcquired, match="migrator backfill r1"):
                commands.rollback(plan, opts(fresh_db))
            commands.backfill(plan, opts(fresh_db))  # another backfill joins in
        with AdvisoryLock(engine, "migrator expand r1"):
            with pytest.raises(LockNotAcquired, match="migrator expand r1"):
                commands.backfill(plan, opts(fresh_db))
    finally:
        engine.dispose()
    assert wrong_rows(fresh_db) == 0


def test_auto_batch_size_follows_the_target_time() -> None:
    from migrator.backfill.sizing import BatchSizer

    sizer = BatchSizer(fixed=None, target=0.2, start=1000, low=10, high=50_000)
    sizer.record(1000, 0.1)  # twice as fast as the target: double
    assert sizer.size == 2000
    sizer.record(2000, 0.25)  # a little slow: a little smaller
    assert sizer.size == 1600
    sizer.record(1600, 5.0)  # one very slow batch halves it, no more
    assert sizer.size == 800
    for _ in range(20):
        sizer.record(sizer.size, 0.001)
    assert sizer.size == 50_000  # capped
    sizer.shrink()
    assert sizer.size == 25_000
    fixed = BatchSizer(fixed=300, target=0.2, start=1000, low=10, high=50_000)
    fixed.record(300, 9.0)
    fixed.shrink()
    assert fixed.size == 300


def test_bitmap_scans_only_where_no_subquery_wants_its_index() -> None:
    """A batch's UPDATE turns index scans off (a bitmap heap scan reads each page once)
    unless the fill or its condition holds a subquery, whose lookups need them."""
    from migrator.backfill.batcher import _plain

    assert _plain("phone IS NULL", ("coalesce(legacy_phone, '')",))
    assert not _plain("phone IS NULL", ("(SELECT name FROM teams WHERE teams.id = team_id)",))
    assert not _plain("team_id IN (SELECT id FROM teams)", ("'x'",))
    assert not _plain("EXISTS (SELECT 1 FROM teams)", ("'x'",))


def test_backfill_updates_run_batched_touch_only_matching_rows_and_resume(fresh_db: str) -> None:
    """`backfill.updates`: a data migration of its own, next to the operations' fills."""
    q(
        fresh_db,
        "CREATE TABLE users (id int PRIMARY KEY, legacy_phone text);"
        "CREATE TABLE orders (id bigint PRIMARY KEY, currency text, note text);"
        "INSERT INTO orders SELECT g, CASE WHEN g % 3 = 0 THEN 'USD' END, 'n' || g "
        "FROM generate_series(1, 5000) g",
    )
    text = """
release: r-updates
expand:
  - add_column:
      table: users
      column: {name: phone, type: text}
      up: "legacy_phone"
backfill:
  batch_size: 200
  updates:
    - table: orders
      set: {currency: "'EUR'", note: "note || '!'"}
      where: currency IS NULL
"""
    plan = parse_plan(text, "plan.yaml")
    commands.expand(plan, opts(fresh_db))
    result = commands.backfill(plan, opts(fresh_db))
    assert "update.0.orders" in result.ran
    assert q(fresh_db, "SELECT currency, count(*) FROM orders GROUP BY 1 ORDER BY 1") == [
        ("EUR", 3334),
        ("USD", 1666),
    ]
    # Only the rows `where` named were touched: the others keep their note.
    assert q(fresh_db, "SELECT count(*) FROM orders WHERE note LIKE '%!'") == [(3334,)]
    assert q(fresh_db, "SELECT count(*) FROM orders WHERE currency = 'USD' AND note LIKE '%!'") == [
        (0,)
    ]
    batches = q(
        fresh_db,
        "SELECT sum(batches) FROM migrator.backfill_ranges WHERE key = 'update.0.orders'",
    )[0][0]
    assert batches is not None and batches >= 5000 // 200
    again = commands.backfill(plan, opts(fresh_db))
    assert "update.0.orders" in again.skipped


@pytest.mark.parametrize(
    ("shape", "where"),
    [
        ("composite", "(tenant, id) > (:lo) AND (tenant, id) <= (:hi)"),
        ("ctid", "ctid >= '(:first,0)'::tid AND ctid < '(:end,0)'::tid"),
    ],
)
def test_dry_run_shows_a_batchs_update_and_changes_nothing(
    fresh_db: str, tmp_path: Path, shape: str, where: str
) -> None:
    from typer.testing import CliRunner

    from migrator.cli import app

    q(fresh_db, SEEDS[shape])
    path = tmp_path / "plan.yaml"
    path.write_text(plan_text())
    commands.expand(parse_plan(plan_text(), str(path)), opts(fresh_db))
    result = CliRunner().invoke(
        app, ["backfill", str(path), "--database-url", fresh_db, "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert (
        f"UPDATE public.users SET phone = ({UP}) WHERE {where} AND ((phone IS NULL) IS TRUE)"
        in flat
    ), result.output
    assert q(fresh_db, "SELECT count(*) FROM users WHERE phone IS NOT NULL") == [(0,)]
    assert q(fresh_db, "SELECT count(*) FROM migrator.steps WHERE phase = 'backfill'") == [(0,)]


@pytest.mark.parametrize("shape", ["integer", "ctid"])
def test_nothing_to_fill_ends_without_a_batch(fresh_db: str, shape: str) -> None:
    """A default already filled every row: the backfill ends at once, with no batch (it
    walked every key range in empty batches, a ctid walk twice), and says it is done."""
    q(fresh_db, SEEDS[shape])
    plan = parse_plan(
        plan_text(batch="500").replace("type: text}", "type: text, default: \"'none'\"}"),
        "plan.yaml",
    )
    commands.expand(plan, opts(fresh_db))
    assert q(fresh_db, "SELECT count(*) FROM users WHERE phone IS NULL") == [(0,)]
    before = q(fresh_db, "SELECT md5(string_agg(users::text, ',' ORDER BY users::text)) FROM users")
    result = commands.backfill(plan, opts(fresh_db))
    assert result.rows == 0 and len(result.ran) == 1
    assert q(fresh_db, "SELECT coalesce(sum(batches), 0) FROM migrator.backfill_ranges") == [(0,)]
    cp = checkpoint(fresh_db)
    assert (cp["rows"], cp["total"], cp["batches"]) == (0, 0, 0)
    assert q(fresh_db, "SELECT status FROM migrator.steps WHERE phase = 'backfill'") == [("done",)]
    assert q(fresh_db, "SELECT phase FROM migrator.releases") == [("backfilled",)]
    after = q(fresh_db, "SELECT md5(string_agg(users::text, ',' ORDER BY users::text)) FROM users")
    assert after == before


def test_a_batch_never_scans_an_index_of_the_column_it_fills(fresh_db: str) -> None:
    """The condition that a row still needs filling (``x IS NULL``) is never an index
    condition of a batch: an index on the column being filled (a retyped key's unique
    index, built before the backfill) holds one entry per row while the column is all
    NULL, and a bitmap AND with it read all of them in every batch (found at 10M rows:
    0.48 s a batch instead of 3 ms). Without the table's statistics, as after a copy or
    before autovacuum has been by, the planner guesses that few rows are NULL."""
    from migrator.backfill.batcher import update_keys_sql, update_pages_sql
    from migrator.backfill.keys import KeyColumn, Walk
    from migrator.engine.steps import BackfillSpec

    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE filled (id int PRIMARY KEY, x bigint) WITH (autovacuum_enabled = off);"
            "INSERT INTO filled (id) SELECT g FROM generate_series(1, 200000) g;"
            "CREATE UNIQUE INDEX filled_x ON filled (x)"
        )
    spec = BackfillSpec(
        key="k", schema="public", table="filled", set={"x": "id::bigint"}, needs="x IS NULL"
    )
    walk = Walk(kind="primary key", columns=(KeyColumn("id", "integer"),), index="filled_pkey")
    for statement in (
        update_keys_sql(spec, walk, ["1000"], ["1250"]),
        update_pages_sql(spec, 10, 12),
    ):
        with psycopg.connect(fresh_db) as conn:
            conn.execute("SET LOCAL enable_indexscan = off")  # as _update_range runs it
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {statement}").fetchall())
            conn.rollback()
        assert "filled_x" not in plan, plan


def test_the_backfilled_table_is_vacuumed_before_the_contract_needs_it(fresh_db: str) -> None:
    """Every filled row left a dead version: the backfill vacuums the table itself, so
    autovacuum does not come for it later and hold off the contract's strong locks
    (bench/retype.py: autovacuum on users made the contract's step retry for 11 s)."""
    q(fresh_db, SEEDS["composite"])
    q(fresh_db, "ALTER TABLE users SET (autovacuum_enabled = false)")  # only ours counts
    plan = make_plan(batch="5000")
    commands.expand(plan, opts(fresh_db))
    commands.backfill(plan, opts(fresh_db))
    assert wrong_rows(fresh_db) == 0
    assert q(
        fresh_db,
        "SELECT vacuum_count, analyze_count > 0, n_dead_tup FROM pg_stat_user_tables "
        "WHERE relid = 'users'::regclass",
    ) == [(1, True, 0)]
    # The pooled session's settings are back as they were.
    assert q(fresh_db, "SHOW lock_timeout") == [("0",)]
