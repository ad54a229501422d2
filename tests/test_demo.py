"""README's first command: `migrator demo` runs the whole release on an embedded
PostgreSQL under load, and says how it ended."""

from __future__ import annotations

import json
import subprocess
import sys


def test_migrator_demo_ends_with_every_request_served_and_every_row_filled() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "migrator", "demo", "--rows", "3000", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    (result,) = [e for e in events if e.get("event") == "result"]
    assert result["requests_failed"] == 0, result["failures"]
    assert result["requests_served"] > 0
    assert set(result["served_by"]) == {"v1", "v2"}  # both versions served during the switch
    assert result["rows"] >= 3000 and result["rows_without_phone"] == 0
    assert result["rows_backfilled"] > 0 and result["phone_not_null"] is True
    # v2 gates its phone count on migrator.release_phase(): pending until the backfill.
    assert result["v2_stats_before_backfill"]["phones"] is None
    assert result["v2_stats_before_backfill"]["pending"] == "backfill"
    assert result["v2_stats_after_backfill"]["phones"] >= 3000
