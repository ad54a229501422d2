"""The lint's verdict on one SQL statement that no plan operation expresses, as the
comment written above its `sql` operation (the reviewer decides what to do with it)."""

from __future__ import annotations

from migrator.errors import PlanError
from migrator.lint import lint_sql


def lint_verdict(statement: str) -> str:
    """``lint: clean``, or each finding as ``M0xx (severity): message``."""
    try:
        findings = lint_sql(statement)
    except PlanError as exc:
        return f"lint: could not read the statement ({exc.reason})"
    if not findings:
        return "lint: no finding for this statement on its own"
    return "lint: " + "; ".join(f"{f.rule} ({f.severity}): {f.message}" for f in findings)


__all__ = ["lint_verdict"]
