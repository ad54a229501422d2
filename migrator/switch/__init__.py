"""Traffic: backends behind one protocol (kubernetes, nginx, route53, command), smoke
tests, the watch window, and the automatic move back to blue."""

from __future__ import annotations

from migrator.observer import NULL_OBSERVER, Observer
from migrator.plan.models import SwitchSettings
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


def make_backend(
    settings: SwitchSettings, *, timing: Timing = REAL_TIME, observer: Observer = NULL_OBSERVER
) -> TrafficBackend:
    """The backend the plan's switch section names."""
    if settings.kubernetes is not None:
        from migrator.switch.kubernetes import Kubernetes

        return Kubernetes(settings.kubernetes, timing=timing, observer=observer)
    if settings.nginx is not None:
        from migrator.switch.nginx import Nginx

        return Nginx(settings.nginx)
    if settings.route53 is not None:
        from migrator.switch.route53 import Route53

        return Route53(settings.route53, timing=timing)
    assert settings.command is not None  # the model allows exactly one backend
    from migrator.switch.command import Command

    return Command(settings.command)


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
