"""The watch window: after each traffic step, probe every `interval` for `duration`.

The first failed probe ends the watch; the caller moves traffic back to blue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import httpx

from migrator.observer import NULL_OBSERVER, Observer
from migrator.switch.base import REAL_TIME, Timing
from migrator.switch.probes import ProbeResult, check
from migrator.switch.settings import Watch


def watch(
    settings: Watch,
    *,
    timing: Timing = REAL_TIME,
    observer: Observer = NULL_OBSERVER,
    still_ours: Callable[[], str | None] = lambda: None,
) -> ProbeResult | None:
    """Probe until `duration` has passed; the first failed probe's result, or None.

    `still_ours` is asked before every round; a message from it (say, someone rolled
    traffic back by hand) stops the watch by raising through the caller's handling.
    """
    start = timing.clock()
    rounds = 0
    # An httpx client costs tens of milliseconds to build: only when a probe needs one.
    client = httpx.Client() if settings.probes else None
    with client or contextlib.nullcontext():
        while True:
            stolen = still_ours()
            if stolen:
                raise WatchInterrupted(stolen)
            for probe in settings.probes:
                assert client is not None
                result = check(probe, client, timing)
                if not result.ok:
                    return result
            rounds += 1
            elapsed = timing.clock() - start
            observer.progress("watch", int(elapsed), int(settings.duration), rounds=rounds)
            remaining = settings.duration - elapsed
            if remaining <= 0:
                return None
            timing.sleep(min(settings.interval, remaining))


class WatchInterrupted(Exception):
    """The traffic changed under the watch (a manual rollback): stop, move nothing."""
