"""The traffic-backend protocol, the split it moves, and the errors a switch raises.

Every backend answers the same four questions (preflight, current split, set the
split, describe), so the switch flow, the watch and the rollback never know which
load balancer they drive. `BackendKind` is what a backend module registers: its YAML
name, its settings model and how to build it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from migrator.errors import GateRefused, MigratorError
from migrator.observer import Observer

Clock = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Timing:
    """Injectable time, so tests run a ten-minute watch in a second."""

    clock: Clock = time.monotonic
    sleep: Sleep = time.sleep


REAL_TIME = Timing()


@dataclass(frozen=True)
class Split:
    """How traffic is shared: the percent on green; blue has the rest."""

    green: int

    def __post_init__(self) -> None:
        if not 0 <= self.green <= 100:
            raise ValueError(f"a split is 0-100% green, not {self.green}")

    @property
    def blue(self) -> int:
        """The percent on blue."""
        return 100 - self.green

    def as_dict(self) -> dict[str, int]:
        """For the audit log and --json."""
        return {"blue": self.blue, "green": self.green}

    def __str__(self) -> str:
        return f"blue {self.blue}% / green {self.green}%"


ALL_BLUE = Split(0)
ALL_GREEN = Split(100)


@runtime_checkable
class TrafficBackend(Protocol):
    """What the switch needs from a load balancer, a service mesh or DNS."""

    name: str

    def preflight(self) -> None:
        """Check the backend is ready to move traffic; raise GateRefused if not."""

    def current(self) -> Split | None:
        """The split now in force, or None where the backend cannot tell."""

    def set_split(self, split: Split) -> Split:
        """Move traffic; return the split now in force (it may be approximate)."""

    def describe(self) -> str:
        """One line naming what this backend drives, for messages and the audit log."""

    def after_watch(self) -> None:
        """Called when all traffic is on green and the watch passed (e.g. scale blue)."""


S = TypeVar("S", bound=BaseModel)


def _any_steps(settings: Any, steps: list[int]) -> str | None:
    return None


@dataclass(frozen=True)
class BackendKind(Generic[S]):
    """One traffic backend as a plan names it (see migrator/switch/registry.py)."""

    name: str
    """The key under ``switch:``."""
    settings: type[S]
    """The model of that key's value."""
    factory: Callable[[S, Timing, Observer], TrafficBackend]
    """Builds the backend; heavy clients (kubernetes, boto3) are imported only here."""
    steps_error: Callable[[S, list[int]], str | None] = _any_steps
    """Why these settings cannot take these steps, or None."""


class SwitchFailed(MigratorError):
    """A traffic backend failed (API error, command failed, nginx refused the config)."""


class SmokeFailed(GateRefused):
    """Green failed its smoke tests; no traffic was moved."""

    def __init__(self, message: str) -> None:
        super().__init__(message, gate="smoke")


class WatchFailed(GateRefused):
    """A probe failed during the watch; traffic was moved back to blue."""

    def __init__(self, message: str, *, probe: str, value: str, limit: str) -> None:
        super().__init__(message, gate="watch")
        self.probe = probe
        self.value = value
        self.limit = limit
