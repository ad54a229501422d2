"""One plain typed function per verb. The CLI calls these; so do the tests.

Each group of verbs lives in its own module; this package re-exports them.
"""

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

__all__ = [
    "Options",
    "PhaseResult",
    "Status",
    "backfill",
    "complete",
    "contract",
    "expand",
    "init",
    "rollback",
    "status",
]
