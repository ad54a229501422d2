"""One error base, typed subclasses, one table of exit codes.

The CLI turns every `MigratorError` into one line and `exit_code`; nothing else in
the package decides how a failure is shown.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes, documented in the README. Defined here and nowhere else."""

    OK = 0
    FINDINGS = 1  # check or lint found problems
    BAD_INPUT = 2  # bad plan or usage
    REFUSED = 3  # refused by a gate: a precondition is not met
    RUNTIME = 4  # runtime failure: database, switch backend
    INTERRUPTED = 5  # interrupted or lock not acquired: safe to rerun


class MigratorError(Exception):
    """Base of every error migrator raises on purpose."""

    exit_code: ExitCode = ExitCode.RUNTIME

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PlanError(MigratorError):
    """A plan that cannot be used: malformed YAML, unknown key, wrong type.

    `location` is ``file:line:column`` where known.
    """

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.location = location
        self.reason = message
        # The errors found in the same file after this one (`plan validate` shows all).
        self.more: list[PlanError] = []


class UsageError(MigratorError):
    """A command used wrongly (missing argument, conflicting options)."""

    exit_code = ExitCode.BAD_INPUT


class ValidationFailed(MigratorError):
    """A plan that does not fit the live database (missing table, name clash...)."""

    exit_code = ExitCode.BAD_INPUT


class GateRefused(MigratorError):
    """A phase was asked for before it is safe; `gate` names the condition."""

    exit_code = ExitCode.REFUSED

    def __init__(self, message: str, *, gate: str = "") -> None:
        super().__init__(message)
        self.gate = gate


class FindingsError(MigratorError):
    """check or lint found problems."""

    exit_code = ExitCode.FINDINGS


class DatabaseError(MigratorError):
    """The database failed or could not be reached."""

    exit_code = ExitCode.RUNTIME


class StepFailed(DatabaseError):
    """A statement of a step failed; `step` names it."""

    def __init__(self, message: str, *, step: str, sql: str | None = None) -> None:
        super().__init__(f"step {step} failed: {message}")
        self.step = step
        self.sql = sql


class LockNotAcquired(MigratorError):
    """Another migrator holds the advisory lock, or DDL could not get its lock in time."""

    exit_code = ExitCode.INTERRUPTED
