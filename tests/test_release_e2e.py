"""The demo's whole release, with the migrator killed (SIGKILL) at random points in
several phases and resumed each time. The service's traffic never fails and the data is
exact at the end."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from migrator.demo import environment


def migrator(*args: str, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "migrator", *args, "--database-url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def exactness(url: str) -> dict[str, int]:
    """Rows whose phone is not what it must be, by kind of row."""
    with psycopg.connect(url) as conn:

        def count(where: str) -> int:
            return int(conn.execute(f"SELECT count(*) FROM users WHERE {where}").fetchone()[0])  # type: ignore[index]

        return {
            "null phone": count("phone IS NULL"),
            # Seeded rows and rows v1 wrote: phone comes from legacy_phone.
            "seed or v1 row": count(
                "legacy_phone IS NOT NULL AND phone <> legacy_phone"
                " OR (legacy_phone IS NULL AND name NOT LIKE 'load %' AND phone <> '')"
            ),
            # Rows v2 wrote keep the phone v2 gave them ('load n-c' -> +1-555-n0000c).
            "v2 row": count(
                "name LIKE 'load %' AND legacy_phone IS NULL AND phone <> '+1-555-' || "
                "split_part(substr(name, 6), '-', 1) || "
                "lpad(split_part(substr(name, 6), '-', 2), 6, '0')"
            ),
        }


def phase(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('migrator.releases')").fetchone()[0] is None:  # type: ignore[index]
            return None
        row = conn.execute("SELECT phase FROM migrator.releases").fetchone()
        return row[0] if row else None


Target = tuple[set[str | None], float]


def run_killing(args: list[str], url: str, rng: random.Random, targets: list[Target]) -> list[str]:
    """Run a migrator command, SIGKILL it once in each target phase (at a random moment,
    at most the target's delay after the release enters it: short phases get short
    delays), then let it finish. Returns the phases of the kills."""
    killed = []
    for target, delay in [*targets, (None, 0.0)]:
        proc = migrator(*args, url=url)
        if target is not None:
            deadline = time.monotonic() + 120
            while proc.poll() is None and phase(url) not in target:
                assert time.monotonic() < deadline, f"never reached {target}"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, delay))
            if proc.poll() is None:
                at = str(phase(url))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed.append(at)
                continue
        out, err = proc.communicate(timeout=300)
        assert proc.returncode in (0, 5), f"exit {proc.returncode}: {err}\n{out}"
        if proc.returncode == 0 and target is None:
            return killed
    # The last run may have been refused by a lock not yet released; run once more.
    proc = migrator(*args, url=url)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {err}\n{out}"
    return killed


@pytest.mark.slow
def test_release_killed_and_resumed_under_load() -> None:
    rng = random.Random(int(os.environ.get("MIGRATOR_TEST_SEED", "20261127")))
    with environment(rows=50_000) as env:
        url = env.database_url
        seen = run_killing(
            ["release", str(env.plan_path), "--workers", "2"],
            url,
            rng,
            [
                ({None}, 1.5),  # during check, which starts its own scratch server
                ({"expanding", "expanded"}, 0.02),
                ({"switching"}, 0.4),  # the watch: 2 s per step
                ({"switching"}, 0.4),
                ({"backfilling"}, 0.03),
            ],
        )
        assert phase(url) == "completed"

        env.blue.stop()  # v1 is retired; its connections close
        seen += run_killing(["contract"], url, rng, [({"contracting"}, 0.01)])
        assert phase(url) == "contracted"

        time.sleep(0.3)
        stats = env.load.stop()
        wrong = exactness(url)

    assert wrong == {"null phone": 0, "seed or v1 row": 0, "v2 row": 0}
    assert stats.failed == 0, stats.failures
    assert stats.served > 100
    assert stats.by_version["v1"] > 0 and stats.by_version["v2"] > 0
    assert len(seen) >= 5
    print(f"killed in phases: {seen}; requests served {stats.served}, failed {stats.failed}")
