"""What the lint reports: one finding per rule broken by one statement."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from migrator.lint.rules import Severity


@dataclass(frozen=True)
class LintFinding:
    """One statement breaking one rule.

    ``operation`` names where the statement comes from (``expand[2].create_index``, or
    ``sql`` for a raw SQL file); ``file``/``line``/``column`` point at it where known
    (1-based). ``suppressed`` holds the plan's written reason when the finding is
    suppressed; such findings are only returned when asked for.
    """

    rule: str
    severity: Severity
    message: str
    safe_form: str
    sql: str
    operation: str | None = None
    file: str | None = None
    line: int | None = None
    column: int | None = None
    suppressed: str | None = None

    @property
    def location(self) -> str:
        """``file:line:column`` as far as known, or ``""``."""
        parts = [str(p) for p in (self.file, self.line, self.column) if p is not None]
        return ":".join(parts)

    def to_json(self) -> dict[str, Any]:
        """Plain data for --format json."""
        return asdict(self)
