"""Steps: the statements an operation returns and the executor runs or prints.

A step is a group of statements that run in one transaction, or, where PostgreSQL
refuses a transaction (CREATE INDEX CONCURRENTLY), in one explicit autocommit block.
"""

from __future__ import annotations

from dataclasses import dataclass

# Raised by a guard statement an operation puts before a strong lock (add_exclusion's
# check of the rows and of its measured index build): a precondition, not a failure.
# Here, not in the executor, so that operations name it without importing the executor
# (SQLAlchemy and psycopg: 0.5 s more for `plan validate`, which runs no SQL).
PRECHECK_REFUSED = "MGR01"


@dataclass(frozen=True)
class Statement:
    """One SQL statement. ``autocommit`` ones run outside any transaction."""

    sql: str
    autocommit: bool = False


@dataclass(frozen=True)
class Step:
    """Statements run and recorded together; ``key`` is stable across runs of one plan."""

    key: str
    description: str
    statements: tuple[Statement, ...]

    def __post_init__(self) -> None:
        modes = {s.autocommit for s in self.statements}
        if len(modes) > 1:
            raise ValueError(f"step {self.key} mixes transactional and autocommit statements")

    @property
    def autocommit(self) -> bool:
        """True when the step runs as an autocommit block."""
        return any(s.autocommit for s in self.statements)


def step(key: str, description: str, *sqls: str, autocommit: bool = False) -> Step:
    """Shorthand for a step whose statements share one mode."""
    return Step(key, description, tuple(Statement(s, autocommit) for s in sqls))


@dataclass(frozen=True)
class BackfillSpec:
    """Rows of one table to fill in batches: ``SET column = expression`` where still needed.

    ``needs`` is the condition that says a row still needs filling (``phone IS NULL``);
    the backfill touches only those rows, so a value the new version wrote is kept.
    """

    key: str
    schema: str
    table: str
    set: dict[str, str]
    needs: str
    description: str = ""


@dataclass(frozen=True)
class Doomed:
    """A table, or a column of a table, that a contract drops or renames away."""

    table: str
    column: str | None = None

    def __str__(self) -> str:
        return f"{self.table}.{self.column}" if self.column else self.table
