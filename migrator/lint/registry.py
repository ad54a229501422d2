"""The checks of the lint, registered for the parse node types they read.

A check is a function ``check(analyzer, stmt, unit, state, phase)``. It is registered
with `on` for the pglast node types it reads (``@on(ast.IndexStmt)``); a check that
reads every statement (lock tracking, UPDATEs nested in a WITH) is registered for
``ast.Node``, in a stage before or after the statement's own checks: the stages fix the
order a statement's findings come in, whatever order the modules are imported in. `at_unit_end` checks run once
a transaction's statements have all been seen. The checks live in
`migrator.lint.checks`, one module per kind of statement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pglast import ast

from migrator.lint.model import LintPhase, Stmt, Unit, UnitState

if TYPE_CHECKING:
    from migrator.lint.analyzer import Analyzer

Check = Callable[["Analyzer", Stmt, Unit, UnitState, "LintPhase | None"], None]
UnitCheck = Callable[["Analyzer", UnitState], None]
# first/last: the lock checks that bracket every statement (M032 sees the locks held
# before it; M029 and the lock tracking see what its own checks learnt).
Stage = Literal["first", "before", "statement", "after", "last"]

_STAGES: tuple[Stage, ...] = ("first", "before", "statement", "after", "last")
_CHECKS: dict[Stage, dict[type[ast.Node], list[Check]]] = {s: {} for s in _STAGES}
_UNIT_END: list[UnitCheck] = []


def on(*node_types: type[ast.Node], stage: Stage = "statement") -> Callable[[Check], Check]:
    """Register a check for statements of these node types (``ast.Node``: every one).

    Checks of the ``first`` and ``before`` stages see the transaction as it was before
    the statement; ``after`` and ``last`` ones run once the statement's own checks have.
    """

    def register(check: Check) -> Check:
        for node_type in node_types:
            _CHECKS[stage].setdefault(node_type, []).append(check)
        return check

    return register


def at_unit_end(check: UnitCheck) -> UnitCheck:
    """Register a check run once at the end of every transaction (or lone statement)."""
    _UNIT_END.append(check)
    return check


def checks_for(node: ast.Node) -> list[Check]:
    """The checks a statement goes through, stage by stage."""
    found: list[Check] = []
    for stage in _STAGES:
        table = _CHECKS[stage]
        found += table.get(ast.Node, [])
        found += table.get(type(node), [])
    return found


def unit_end_checks() -> list[UnitCheck]:
    """The checks run at the end of each transaction."""
    return list(_UNIT_END)


def registered() -> dict[str, list[str]]:
    """Node type name -> the names of its checks (for tests and for reading)."""
    out: dict[str, list[str]] = {}
    for stage in _STAGES:
        for node_type, checks in _CHECKS[stage].items():
            out.setdefault(node_type.__name__, []).extend(c.__name__ for c in checks)
    return out
