"""The short version of bench/faults.py: the pagila release on a small copy under a live
load, PostgreSQL stopped with -m immediate and started again at a random moment, and
migrator's connections terminated at another; each run ends exactly as the undisturbed
one (row checksums, schema, the DDL each step ran once) with no request failed while the
database was up. kill -9 at random moments is tests/test_backfill_resume.py's; the bench
itself takes all four faults, 20 times."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_faults_short() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "faults.py"),
            "--faults",
            "2",
            "--kinds",
            "restart,terminate",
            "--rows",
            "100",
            "--rate",
            "10",
            "--down",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "resumed exact:                 2/2" in out, out
    assert "steps run twice:               0" in out, out
    assert "failed requests, database up:  0 of" in out, out
    # The faults came while the release ran, and the restart was seen by the application.
    assert "(no command: the release had ended)" not in out, out
    assert "failed requests, database down (restart faults): 0" not in out, out
