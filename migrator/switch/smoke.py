"""Smoke tests: green must answer its probes before any traffic moves to it."""

from __future__ import annotations

import httpx

from migrator.observer import NULL_OBSERVER, Observer
from migrator.switch.base import REAL_TIME, SmokeFailed, Timing
from migrator.switch.probes import ProbeResult, check
from migrator.switch.settings import Probe


def smoke(
    probes: list[Probe],
    *,
    timing: Timing = REAL_TIME,
    observer: Observer = NULL_OBSERVER,
) -> list[ProbeResult]:
    """Run every smoke probe (each with its retries and timeout); raise SmokeFailed on the
    first that fails, before any traffic has moved."""
    results: list[ProbeResult] = []
    if not probes:
        return results
    with httpx.Client() as client:
        for probe in probes:
            result = check(probe, client, timing)
            results.append(result)
            if not result.ok:
                raise SmokeFailed(
                    f"smoke test failed, no traffic moved: {result.probe} gave {result.value}, "
                    f"expected {result.limit}"
                )
            observer.info(f"smoke: {result}")
    return results
