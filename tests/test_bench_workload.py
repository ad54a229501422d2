"""bench/_workload.py's lock sampler, which the benches' lock-wait figures come from: an
application session waiting on a lock is recorded with the mode it waits for, the
relation, and the statement of the session that blocks it. The wait is made by holding
a lock and waited for in the sampler's own records, never for a time."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from _workload import LockSampler


def test_a_wait_is_recorded_with_its_lock_and_its_blocker(module_db: str) -> None:
    url = module_db
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS sampled (id int PRIMARY KEY)")
    sampler = LockSampler(url, every=0.005).start()
    done = threading.Event()

    def app() -> None:
        with psycopg.connect(url, autocommit=True, application_name="bench app") as conn:
            conn.execute("SELECT count(*) FROM sampled").fetchall()
        done.set()

    try:
        with psycopg.connect(url, application_name="holder") as holder:
            holder.execute("LOCK TABLE sampled IN ACCESS EXCLUSIVE MODE")
            reader = threading.Thread(target=app)
            reader.start()
            deadline = time.monotonic() + 120  # ends a test gone wrong, decides nothing
            while not sampler.waits:
                assert not done.is_set(), "the application did not wait"
                assert time.monotonic() < deadline, "the sampler never saw the wait"
                time.sleep(0.005)
            holder.rollback()
        reader.join(60)
    finally:
        sampler.stop()
    wait = sampler.longest(0, time.time() + 1)
    assert wait is not None
    assert (wait.mode, wait.relation, wait.locktype) == ("AccessShareLock", "sampled", "relation")
    assert wait.query == "SELECT count(*) FROM sampled"
    assert len(wait.blockers) == 1
    assert wait.blockers[0].endswith("holder: LOCK TABLE sampled IN ACCESS EXCLUSIVE MODE")
    assert "blocked by" in wait.describe() and wait.seconds >= 0
