"""The ranges of one backfill, kept in ``migrator.backfill_ranges``.

The table is split once into ranges (key ranges from a sample of the walking key, or
page ranges); each range row carries the position of its last finished batch, which
is updated in the batch's own transaction: that is the checkpoint a rerun resumes
from.

Workers (threads of one process, or other processes and pods on the same release)
claim ranges with ``FOR UPDATE SKIP LOCKED`` and hold a session advisory lock on the
range while they walk it. The lock dies with its session, so a range whose worker was
killed is free again at once, and a live worker's range is never taken twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from migrator.backfill.batcher import Key, scalar, select_key
from migrator.backfill.keys import Walk
from migrator.engine.steps import BackfillSpec
from migrator.sqltext import ident, literal

# First half of the two-key advisory locks on ranges: "mbfr". The second half is a
# hash of release, step and range number (a collision only makes a worker wait).
RANGE_LOCK_CLASS = 0x6D626672
# Serialises preparing, resetting and finishing the ranges of one step.
STEP_LOCK_CLASS = 0x6D626673

EXACT_COUNT_PAGES = 10_000
SAMPLE_PAGES = 300

Position = Key | int | None


@dataclass(frozen=True)
class Range:
    """One claimed range: ``lo < key <= hi`` (keys) or ``lo <= page < hi`` (ctid).

    ``pass_`` is the pass being walked: earlier passes fill a share of the rows of each
    page, 2 (the last) the rest (`migrator.backfill.runner` says why); ``position`` is
    within that pass.
    """

    n: int
    lo: Position
    hi: Position
    position: Position
    status: str
    rows: int
    pass_: int = 2

    @property
    def start(self) -> Position:
        """Where the walk (re)starts: after the last finished batch."""
        return self.position if self.position is not None else self.lo


@dataclass(frozen=True)
class Summary:
    """The ranges taken together."""

    rows: int
    batches: int
    done: int
    ranges: int

    @property
    def finished(self) -> bool:
        """True when every range is done."""
        return self.ranges > 0 and self.done == self.ranges


def _pages(conn: Connection, spec: BackfillSpec) -> int:
    name = literal(ident(spec.schema, spec.table))
    value = conn.exec_driver_sql(
        f"SELECT pg_relation_size(CAST({name} AS regclass)) / current_setting('block_size')::bigint"
    ).scalar_one()
    return int(value)


MIN_RANGE_ROWS = 1000


def plan_ranges(
    conn: Connection, spec: BackfillSpec, walk: Walk, count: int, floor: int = 1
) -> tuple[list[tuple[Position, Position]], int]:
    """Split the table into about ``count`` ranges; also estimate the rows to fill.

    A small table gets fewer ranges, of at least MIN_RANGE_ROWS rows to fill each (a
    range's passes must each be worth a batch), but never fewer than ``floor``.

    Key boundaries are quantiles of a TABLESAMPLE of the key (about SAMPLE_PAGES pages
    whatever the table's size). The estimate is an exact count on a small table, else
    the table's rows (pg_class.reltuples) times the share of the sample needing it.
    """
    table = ident(spec.schema, spec.table)
    pages = _pages(conn, spec)
    percent = min(100.0, 100.0 * SAMPLE_PAGES / max(pages, 1))
    cursor = conn.connection.cursor()
    key_list = select_key(walk.columns) + ", " if walk.keyset else ""
    order = f" ORDER BY {', '.join(ident(c.name) for c in walk.columns)}" if walk.keyset else ""
    cursor.execute(
        f"SELECT {key_list}({spec.needs}) FROM {table} "
        f"TABLESAMPLE SYSTEM ({percent:.6f}) REPEATABLE (42){order}"
    )
    sample = cursor.fetchall()
    if pages <= EXACT_COUNT_PAGES:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE ({spec.needs})")
        total = int(scalar(cursor))
    else:
        cursor.execute(
            f"SELECT reltuples FROM pg_class WHERE oid = CAST({literal(table)} AS regclass)"
        )
        reltuples = float(scalar(cursor))
        rows = reltuples if reltuples > 0 else len(sample) * 100.0 / percent
        share = sum(1 for r in sample if r[-1]) / len(sample) if sample else 1.0
        total = int(rows * share)
    count = max(floor, min(count, total // MIN_RANGE_ROWS))
    if not walk.keyset:
        step = max(1, math.ceil(pages / max(count, 1)))
        starts = list(range(0, max(pages, 1), step))
        bounds: list[tuple[Position, Position]] = [
            (s, starts[i + 1] if i + 1 < len(starts) else None) for i, s in enumerate(starts)
        ]
        return bounds, total
    keys = [[str(v) for v in r[:-1]] for r in sample]
    splits: list[Key] = []
    for i in range(1, max(count, 1)):
        if not keys:
            break
        candidate = keys[min(len(keys) - 1, i * len(keys) // count)]
        if not splits or candidate != splits[-1]:
            splits.append(candidate)
    edges: list[Position] = [None, *splits, None]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)], total


def _position(value: Any) -> Position:
    if value is None or isinstance(value, int):
        return value
    return [str(v) for v in value]


class RangeStore:
    """The range rows of one backfill step. Methods take the connection to use."""

    def __init__(self, release: str, key: str, phase: str = "backfill") -> None:
        self.release = release
        self.key = key
        self.phase = phase

    @property
    def _where(self) -> str:
        return "release = :r AND phase = :ph AND key = :k"

    def _params(self, **more: Any) -> dict[str, Any]:
        return {"r": self.release, "ph": self.phase, "k": self.key, **more}

    def lock_step(self, conn: Connection) -> None:
        """Serialise preparing and resetting this step's ranges (until the transaction ends)."""
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:c, hashtext(:id))"),
            {"c": STEP_LOCK_CLASS, "id": f"{self.release}|{self.phase}|{self.key}"},
        )

    def exists(self, conn: Connection) -> bool:
        """True once the ranges were planned."""
        found = conn.execute(
            text(f"SELECT 1 FROM migrator.backfill_ranges WHERE {self._where} LIMIT 1"),
            self._params(),
        ).first()
        return found is not None

    def create(
        self, conn: Connection, bounds: list[tuple[Position, Position]], first_pass: int = 2
    ) -> None:
        """Insert the planned ranges (pending, no position yet, at ``first_pass``)."""
        for n, (lo, hi) in enumerate(bounds):
            conn.execute(
                text(
                    "INSERT INTO migrator.backfill_ranges (release, phase, key, n, lo, hi, pass) "
                    "VALUES (:r, :ph, :k, :n, CAST(:lo AS jsonb), CAST(:hi AS jsonb), :ps)"
                ),
                self._params(n=n, lo=json.dumps(lo), hi=json.dumps(hi), ps=first_pass),
            )

    def delete(self, conn: Connection) -> None:
        """Forget the ranges (the walk changed, or the step was undone)."""
        conn.execute(
            text(f"DELETE FROM migrator.backfill_ranges WHERE {self._where}"), self._params()
        )

    def reset(self, conn: Connection) -> None:
        """Walk every range again from its start, in one pass (a sweep after a ctid walk)."""
        conn.execute(
            text(
                "UPDATE migrator.backfill_ranges SET status = 'pending', position = NULL, "
                f"pass = 2, updated_at = now() WHERE {self._where}"
            ),
            self._params(),
        )

    def claim(self, conn: Connection, worker: str, skip: Sequence[int] = ()) -> Range | None:
        """Claim a range nobody is walking, or None; commits.

        One candidate row at a time is locked (SKIP LOCKED passes over the ones other
        claimers are looking at); the range's advisory lock then says whether a live
        worker is on it. A 'running' range whose lock is free lost its worker. ``skip``:
        the ranges this session holds already (its advisory locks are its own to take
        again, so they would not tell).
        """
        tried: list[int] = list(skip)
        while True:
            row = conn.execute(
                text(
                    "SELECT n, lo, hi, position, status, rows, pass "
                    "FROM migrator.backfill_ranges "
                    f"WHERE {self._where} AND status <> 'done' AND n <> ALL(:tried) "
                    "ORDER BY status = 'running', n LIMIT 1 FOR UPDATE SKIP LOCKED"
                ),
                self._params(tried=tried),
            ).first()
            if row is None:
                conn.commit()
                return None
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(:c, hashtext(:id))"),
                {"c": RANGE_LOCK_CLASS, "id": self._lock_id(row.n)},
            ).scalar_one()
            if not got:
                tried.append(int(row.n))  # a live worker is on it
                continue
            conn.execute(
                text(
                    "UPDATE migrator.backfill_ranges SET status = 'running', worker = :w, "
                    f"updated_at = now() WHERE {self._where} AND n = :n"
                ),
                self._params(w=worker, n=row.n),
            )
            conn.commit()
            return Range(
                row.n,
                _position(row.lo),
                _position(row.hi),
                _position(row.position),
                "running",
                int(row.rows),
                int(row[6]),
            )

    def release_claim(self, conn: Connection, rng: Range) -> None:
        """Let go of a range's advisory lock (closing the session would too)."""
        conn.execute(
            text("SELECT pg_advisory_unlock(:c, hashtext(:id))"),
            {"c": RANGE_LOCK_CLASS, "id": self._lock_id(rng.n)},
        )
        conn.commit()

    def _lock_id(self, n: int) -> str:
        return f"{self.release}|{self.phase}|{self.key}|{n}"

    def checkpoint(
        self,
        conn: Connection,
        rng: Range,
        position: Position,
        rows: int,
        done: bool,
        pass_: int = 2,
    ) -> None:
        """Record a finished batch of pass ``pass_``, in the batch's own transaction."""
        conn.execute(
            text(
                "UPDATE migrator.backfill_ranges SET position = CAST(:p AS jsonb), "
                "rows = rows + :u, batches = batches + 1, updated_at = now(), pass = :ps, "
                "status = CASE WHEN :d THEN 'done' ELSE 'running' END "
                f"WHERE {self._where} AND n = :n"
            ),
            self._params(p=json.dumps(position), u=rows, d=done, n=rng.n, ps=pass_),
        )

    def summary(self, conn: Connection) -> Summary:
        """Rows and batches done so far, ranges done of all."""
        row = conn.execute(
            text(
                "SELECT coalesce(sum(rows), 0), coalesce(sum(batches), 0), "
                "count(*) FILTER (WHERE status = 'done'), count(*) "
                f"FROM migrator.backfill_ranges WHERE {self._where}"
            ),
            self._params(),
        ).one()
        conn.commit()
        return Summary(int(row[0]), int(row[1]), int(row[2]), int(row[3]))
