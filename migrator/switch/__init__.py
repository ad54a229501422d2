"""Traffic: backends behind one protocol (registry.py names them), smoke tests, the
watch window, and the automatic move back to blue."""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrator.observer import NULL_OBSERVER, Observer
from migrator.switch.base import (
    ALL_BLUE,
    ALL_GREEN,
    REAL_TIME,
    SmokeFailed,
    Split,
    SwitchFailed,
    Timing,
    TrafficBackend,
    WatchFailed,
)

if TYPE_CHECKING:
    from migrator.switch.settings import SwitchSettings


def make_backend(
    settings: SwitchSettings, *, timing: Timing = REAL_TIME, observer: Observer = NULL_OBSERVER
) -> TrafficBackend:
    """The backend the plan's switch section names."""
    from migrator.switch.registry import REGISTRY

    kind = REGISTRY[settings.backend_name]
    return kind.factory(settings.backend, timing, observer)


__all__ = [
    "ALL_BLUE",
    "ALL_GREEN",
    "REAL_TIME",
    "SmokeFailed",
    "Split",
    "SwitchFailed",
    "Timing",
    "TrafficBackend",
    "WatchFailed",
    "make_backend",
]
