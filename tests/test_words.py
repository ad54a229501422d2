"""Counts in words: one of a thing is singular, in the helper and in the CLI's output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from migrator.words import count

ONE_OPERATION = """\
release: 2026-12-one
database: {schema: public}
expand:
  - add_column:
      table: users
      column: {name: nickname, type: text}
contract:
  not_before: 1h
  operations: []
"""


def test_count_is_singular_for_one_only() -> None:
    assert count(0, "step") == "0 steps"
    assert count(1, "step") == "1 step"
    assert count(2, "operation") == "2 operations"
    assert count(1, "entry", "entries") == "1 entry"
    assert count(3, "entry", "entries") == "3 entries"


def test_plan_validate_says_1_operation(tmp_path: Path) -> None:
    plan = tmp_path / "one.yaml"
    plan.write_text(ONE_OPERATION)
    done = subprocess.run(
        [sys.executable, "-m", "migrator", "plan", "validate", str(plan)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("release 2026-12-one, 1 operation")
    plan.write_text(
        ONE_OPERATION.replace(
            "operations: []", "operations:\n    - drop_column: {table: users, column: legacy}"
        )
    )
    two = subprocess.run(
        [sys.executable, "-m", "migrator", "plan", "validate", str(plan)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert two.returncode == 0, two.stderr
    assert two.stdout.rstrip().endswith("release 2026-12-one, 2 operations")
