"""What every operation is: plain data that returns statements, never executes them.

Each operation kind is one module under ``migrator/ops`` with one class. The class is
the YAML model (its fields are the keys the plan takes) and knows its lifecycle:

- ``validate(ctx)``: check the plan against the live catalog; raise `ValidationFailed`.
- ``expand(ctx)``: the steps that add what the new version needs.
- ``backfills(ctx)``: the data the expand leaves to fill in batches.
- ``contract(ctx)``: the steps that remove what only the old version needed.
- ``rollback(ctx)``: the steps that undo the expand, while the old version is live.

A step is a group of statements that run in one transaction, or, where PostgreSQL
refuses a transaction (CREATE INDEX CONCURRENTLY), in one explicit autocommit block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from migrator.errors import ValidationFailed
from migrator.plan.types import Strict

if TYPE_CHECKING:
    from migrator.engine.catalog import Catalog

Phase = Literal["expand", "contract"]


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


@dataclass
class Context:
    """What an operation may know while it builds statements."""

    schema: str
    release: str
    catalog: Catalog
    server_version: int = 180000
    notes: list[str] = field(default_factory=list)


class Operation(Strict):
    """Base of every operation model. Subclasses set ``op_name`` and ``allowed``."""

    op_name: ClassVar[str]
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    where_it_belongs: ClassVar[str] = ""

    def describe(self) -> str:
        """A short human description, for step names and status."""
        return self.op_name

    def validate_live(self, ctx: Context) -> None:
        """Check the operation against the live catalog (default: nothing to check)."""

    def expand(self, ctx: Context) -> Sequence[Step]:
        """The expand steps."""
        raise ValidationFailed(f"{self.op_name} cannot stand under expand: {self.where_it_belongs}")

    def backfills(self, ctx: Context) -> Sequence[BackfillSpec]:
        """Data left to fill in batches after the expand."""
        return ()

    def contract(self, ctx: Context) -> Sequence[Step]:
        """The contract steps (scheduled when the release completes)."""
        return ()

    def rollback(self, ctx: Context) -> Sequence[Step]:
        """Steps that undo the expand, in the order to run them."""
        return ()
