"""Lock-safety and compatibility lint: every statement a plan will run, held to the rules.

The rules, their ids (M001..M042; the optional ones are off unless enabled), reasons
and safe forms are defined once, in `migrator.lint.rules` (docs/lint-rules.md is
generated from it). `lint_plan` judges a
plan's operations (the steps of their expand, rollback and contract, `sql` text
included); `lint_plan_report` adds the suppressed findings and the operations that
could not be built offline; `lint_sql` judges a raw SQL migration file.
"""

from migrator.findings import Finding
from migrator.lint.rules import RULES, Rule, RuleSettings, render_markdown
from migrator.lint.sources import (
    LintReport,
    lint_plan,
    lint_plan_report,
    lint_sql,
    normalize_version,
)

__all__ = [
    "RULES",
    "Finding",
    "LintReport",
    "Rule",
    "RuleSettings",
    "lint_plan",
    "lint_plan_report",
    "lint_sql",
    "normalize_version",
    "render_markdown",
]
