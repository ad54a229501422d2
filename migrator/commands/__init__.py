"""One plain typed function per verb. The CLI calls these; so do the tests.

Each group of verbs lives in its own module; this package re-exports them.
"""

from migrator.commands.check import CheckOptions, check
from migrator.commands.phases import (
    Options,
    PhaseResult,
    Status,
    backfill,
    complete,
    contract,
    expand,
    init,
    rollback,
    status,
)
from migrator.commands.switch import SwitchResult, rollback_traffic, switch

__all__ = [
    "CheckOptions",
    "Options",
    "PhaseResult",
    "Status",
    "SwitchResult",
    "backfill",
    "check",
    "complete",
    "contract",
    "expand",
    "init",
    "rollback",
    "rollback_traffic",
    "status",
    "switch",
]
