"""One plain typed function per verb. The CLI calls these; so do the tests.

Each verb lives in its own module; this package re-exports them. A module is imported
when one of its names is first asked for (`commands.expand`, or `from migrator.commands
import lint`), so `migrator lint` does not load what the switch or the backfill needs.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrator.commands.backfill import backfill
    from migrator.commands.check import CheckOptions, check
    from migrator.commands.complete import complete
    from migrator.commands.contract import contract
    from migrator.commands.expand import expand
    from migrator.commands.gate import GateResult, gate
    from migrator.commands.lint import LintResult, lint, lint_sql_files
    from migrator.commands.render import RenderOptions, RenderResult, render
    from migrator.commands.report import ReleaseReport, report
    from migrator.commands.rollback import rollback
    from migrator.commands.session import Options, PhaseResult, init
    from migrator.commands.status import Status, status
    from migrator.commands.switch import SwitchResult, rollback_traffic, switch

# Where each name lives.
_HOME = {
    "backfill": "backfill",
    "CheckOptions": "check",
    "check": "check",
    "complete": "complete",
    "contract": "contract",
    "expand": "expand",
    "GateResult": "gate",
    "gate": "gate",
    "LintResult": "lint",
    "lint": "lint",
    "lint_sql_files": "lint",
    "RenderOptions": "render",
    "RenderResult": "render",
    "render": "render",
    "ReleaseReport": "report",
    "report": "report",
    "rollback": "rollback",
    "Options": "session",
    "PhaseResult": "session",
    "init": "session",
    "Status": "status",
    "status": "status",
    "SwitchResult": "switch",
    "rollback_traffic": "switch",
    "switch": "switch",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        # Python binds a submodule to its package when it is first imported; a verb's
        # name here stays its function (`commands.expand(...)`), as eager imports left it.
        if isinstance(value, types.ModuleType) and _HOME.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "CheckOptions",
    "GateResult",
    "LintResult",
    "Options",
    "PhaseResult",
    "RenderOptions",
    "ReleaseReport",
    "RenderResult",
    "Status",
    "SwitchResult",
    "backfill",
    "check",
    "complete",
    "contract",
    "expand",
    "gate",
    "init",
    "lint",
    "lint_sql_files",
    "render",
    "report",
    "rollback",
    "rollback_traffic",
    "status",
    "switch",
]
