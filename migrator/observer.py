"""Progress and events leave the core through an observer, never through print."""

from __future__ import annotations

from typing import Any


class Observer:
    """Receives what the core does. Every method is a no-op here; the CLI overrides them."""

    def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
        """A statement is about to run (or, in a dry run, would run)."""

    def step_started(self, step: str, description: str) -> None:
        """A recorded step begins."""

    def step_skipped(self, step: str, description: str) -> None:
        """A step is already done and is skipped on this rerun."""

    def step_done(self, step: str, description: str, seconds: float) -> None:
        """A step finished."""

    def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
        """A statement lost its lock race and will be retried after `wait` seconds."""

    def progress(self, task: str, done: int, total: int | None, **extra: Any) -> None:
        """Progress of a long task (a backfill): rows done of an estimate."""

    def info(self, message: str) -> None:
        """Something worth telling the user."""

    def warning(self, message: str) -> None:
        """Something the user should look at; the command goes on."""


NULL_OBSERVER = Observer()
