"""Alembic revisions as the SQL `alembic upgrade --sql` writes, each statement at its call.

Each revision's ``upgrade()`` runs against Alembic's own `Operations` on an offline
`MigrationContext` (``as_sql``, PostgreSQL dialect, no connection, no env.py), so every
``op.xxx()`` writes its SQL to a buffer as `alembic upgrade --sql` does; ``invoke`` is
wrapped to note which part of the buffer each call wrote and the revision file's line of
the call. `migrator lint --alembic` holds that SQL to the rules and names each finding at
the revision file.
"""

from __future__ import annotations

import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import Script

from migrator.authoring.alembic_import import revisions, run_upgrade
from migrator.errors import UsageError

# A suppression in a revision: a Python comment on the lines right above the op call,
# `# migrator-lint: ignore M014 <reason>`, carried into the SQL as the lint reads it there.
_WAIVER = re.compile(r"^\s*#\s*(migrator-lint:.*)$")


@dataclass
class Chunk:
    """What one op call wrote: its SQL, and the revision file's line of the call."""

    sql: str
    line: int | None
    waivers: list[str] = field(default_factory=list)


@dataclass
class RevisionSql:
    """One revision's offline SQL, call by call."""

    revision: str
    path: str
    chunks: list[Chunk] = field(default_factory=list)
    transactional: bool = True


class _Writer:
    """An `Operations` whose ``invoke`` runs the operation (it writes SQL to the buffer)
    and notes what each call wrote and from which line of the revision file."""

    def __init__(self, context: MigrationContext, buffer: io.StringIO, files: set[str]) -> None:
        self.buffer = buffer
        self.files = files
        self.calls: list[tuple[int, int, int | None]] = []  # start, end, line
        self.operations = Operations(context)
        self._invoke = self.operations.invoke
        # Every op.xxx() of Alembic ends in invoke(); an instance attribute wraps it.
        self.operations.invoke = self.invoke  # type: ignore[method-assign]

    def invoke(self, operation: Any) -> Any:
        frame = sys._getframe(1)
        line: int | None = None
        while frame is not None:
            if frame.f_code.co_filename in self.files:
                line = frame.f_lineno
                break
            frame = frame.f_back  # type: ignore[assignment]
        start = self.buffer.tell()
        result = self._invoke(operation)
        self.calls.append((start, self.buffer.tell(), line))
        return result


def _waivers(lines: list[str], line: int | None) -> list[str]:
    """The `# migrator-lint:` comments on the lines right above ``line`` (1-based)."""
    found: list[str] = []
    if line is None:
        return found
    at = line - 2
    while at >= 0 and lines[at].lstrip().startswith("#"):
        match = _WAIVER.match(lines[at])
        if match:
            found.insert(0, match.group(1).strip())
        at -= 1
    return found


def select_revisions(location: Path, specs: list[str]) -> list[Script]:
    """The revisions ``specs`` name, oldest first, each once: ``REV``, ``BASE:HEAD`` (BASE
    excluded), or a revision file's path (as pre-commit passes the files that changed);
    none named: every revision."""
    if not specs:
        return revisions(location, None)
    chosen: dict[str, Script] = {}
    files = [s for s in specs if s.endswith(".py")]
    if files:
        every = revisions(location, None)
        by_path = {Path(str(s.path)).resolve(): s for s in every}
        for name in files:
            found = by_path.get(Path(name).resolve())
            if found is None:
                if Path(name).name == "env.py" or not Path(name).is_file():
                    continue  # not a revision (env.py, a deleted file): nothing to lint
                raise UsageError(f"{name}: not a revision of {location}")
            chosen[found.revision] = found
    for spec in specs:
        if not spec.endswith(".py"):
            for script in revisions(location, spec):
                chosen[script.revision] = script
    order = {s.revision: n for n, s in enumerate(revisions(location, None))}
    return sorted(chosen.values(), key=lambda s: order.get(s.revision, -1))


def offline_sql(scripts: list[Script]) -> list[RevisionSql]:
    """Each revision's upgrade() as offline SQL, oldest first."""
    out: list[RevisionSql] = []
    for script in scripts:
        path = str(script.path)
        buffer = io.StringIO()
        context = MigrationContext.configure(
            dialect_name="postgresql",
            opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True},
        )
        writer = _Writer(context, buffer, {path, str(Path(path).resolve())})
        run_upgrade(script, writer.operations, "its SQL was written")
        text = buffer.getvalue()
        try:
            source_lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError:
            source_lines = []
        revision = RevisionSql(script.revision, path)
        taken = 0
        # Outer calls first: an op that invokes another holds what the inner one wrote.
        for start, end, line in sorted(writer.calls, key=lambda c: (c[0], -c[1])):
            if end <= taken:
                continue
            if text[taken:start].strip():  # written outside any op call (a raw context)
                revision.chunks.append(Chunk(text[taken:start], None))
            revision.chunks.append(Chunk(text[start:end], line, _waivers(source_lines, line)))
            taken = end
        if text[taken:].strip():
            revision.chunks.append(Chunk(text[taken:], None))
        out.append(revision)
    return out


__all__ = ["Chunk", "RevisionSql", "offline_sql", "select_revisions"]
