"""One plain typed function per verb. The CLI calls these; so do the tests.

Each group of verbs lives in its own module; this package re-exports them.
"""

from migrator.commands.backfill import backfill
from migrator.commands.check import CheckOptions, check
from migrator.commands.complete import complete
from migrator.commands.contract import contract
from migrator.commands.expand import expand
from migrator.commands.lint import LintResult, lint, lint_sql_files
from migrator.commands.render import RenderOptions, RenderResult, render
from migrator.commands.rollback import rollback
from migrator.commands.session import Options, PhaseResult, init
from migrator.commands.status import Status, status
from migrator.commands.switch import SwitchResult, rollback_traffic, switch

__all__ = [
    "CheckOptions",
    "LintResult",
    "Options",
    "PhaseResult",
    "RenderOptions",
    "RenderResult",
    "Status",
    "SwitchResult",
    "backfill",
    "check",
    "complete",
    "contract",
    "expand",
    "init",
    "lint",
    "lint_sql_files",
    "render",
    "rollback",
    "rollback_traffic",
    "status",
    "switch",
]
