"""The switch itself: smoke-test green, move traffic step by step, watch each step,
and move everything back to blue at once when a probe fails."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from migrator.durations import format_duration
from migrator.errors import GateRefused
from migrator.observer import NULL_OBSERVER, Observer
from migrator.switch.base import (
    ALL_BLUE,
    REAL_TIME,
    Split,
    SwitchFailed,
    Timing,
    TrafficBackend,
    WatchFailed,
)
from migrator.switch.settings import SwitchSettings
from migrator.switch.smoke import smoke
from migrator.switch.watch import WatchInterrupted, watch

MoveRecorder = Callable[["Move"], None]
"""Keeps one traffic change (the audit log's switch.traffic event)."""
Watched = Callable[[Split], None]


@dataclass(frozen=True)
class Move:
    """One traffic change, as the audit log keeps it."""

    before: Split | None
    after: Split
    reason: str
    seconds: float
    backend: str

    def details(self) -> dict[str, Any]:
        """For migrator.events."""
        return {
            "backend": self.backend,
            "from": self.before.as_dict() if self.before else None,
            "to": self.after.as_dict(),
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Switcher:
    """Drives one backend through the steps of a plan's switch section."""

    backend: TrafficBackend
    settings: SwitchSettings
    record: MoveRecorder
    timing: Timing = REAL_TIME
    observer: Observer = NULL_OBSERVER
    watched: Watched | None = None
    """Told each split whose watch passed (the audit log keeps it, so that a rerun
    knows whether the split it finds traffic at was watched to the end)."""
    moves: list[Move] = field(default_factory=list)

    def move(self, to: Split, reason: str, before: Split | None = None) -> Split:
        """Set the split and record the change."""
        if before is None:
            before = self.backend.current()
        started = self.timing.clock()
        after = self.backend.set_split(to)
        move = Move(before, after, reason, self.timing.clock() - started, self.backend.describe())
        self.moves.append(move)
        self.record(move)
        self.observer.info(f"traffic: {after} ({reason}, {move.seconds:.2f}s)")
        return after

    def smoke(self) -> None:
        """Green's smoke tests; SmokeFailed (exit 3) before any traffic moves."""
        smoke(self.settings.smoke, timing=self.timing, observer=self.observer)

    def forward(self, percents: list[int], *, current: Split) -> Split:
        """Each step with its watch (call `smoke` first). A failed probe moves all
        traffic back to blue and raises WatchFailed (exit 3)."""
        total = len(self.settings.steps)
        for percent in percents:
            number = self.settings.steps.index(percent) + 1
            current = self.move(Split(percent), f"step {number}/{total}", before=current)
            self._watch(current, f"step {number}/{total} ({percent}% green)")
        return current

    def resume(self, current: Split) -> None:
        """Watch the split traffic is at, which no run watched to the end (one was
        killed or interrupted during its watch, or traffic was moved by other means).
        A failed probe moves all traffic back to blue and raises WatchFailed."""
        percent = current.green
        steps = self.settings.steps
        label = (
            f"step {steps.index(percent) + 1}/{len(steps)} ({percent}% green), resumed"
            if percent in steps
            else f"{current}, resumed"
        )
        self._watch(current, label)

    def _watch(self, expected: Split, label: str) -> None:
        def still_ours() -> str | None:
            now = self.backend.current()
            if now is not None and now.green == 0 and expected.green > 0:
                return "traffic was moved back to blue by someone else (a rollback?)"
            return None

        w = self.settings.watch
        self.observer.info(
            f"watch: {label} for {format_duration(w.duration)}, "
            f"{len(w.probes)} probe(s) every {format_duration(w.interval)}"
        )
        started = self.timing.clock()
        try:
            failed = watch(
                self.settings.watch,
                timing=self.timing,
                observer=self.observer,
                still_ours=still_ours,
            )
        except WatchInterrupted as exc:
            raise GateRefused(f"switch stopped during the watch of {label}: {exc}") from exc
        if failed is None:
            self.observer.info(f"watch: {label} passed")
            if self.watched is not None:
                self.watched(expected)
            return
        elapsed = self.timing.clock() - started
        reason = f"watch failed: {failed.probe}: {failed.value} (limit {failed.limit})"
        try:
            self.move(ALL_BLUE, reason, before=expected)
        except SwitchFailed as exc:
            raise SwitchFailed(
                f"{reason} after {elapsed:.1f}s of {label}, and moving traffic back to blue "
                f"failed: {exc}"
            ) from exc
        raise WatchFailed(
            f"watch of {label} failed after {elapsed:.1f}s: {failed.probe} gave {failed.value}, "
            f"limit {failed.limit}; all traffic moved back to blue in "
            f"{self.moves[-1].seconds:.2f}s",
            probe=failed.probe,
            value=failed.value,
            limit=failed.limit,
        )
