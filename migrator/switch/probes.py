"""Probes: an HTTP check (status and latency) or a Prometheus instant query.

Each probe returns a `ProbeResult` that names the probe, the value seen and the limit,
so a failure can say exactly what was wrong. Probes never raise for a failed check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx

from migrator.switch.base import Timing
from migrator.switch.settings import HttpProbe, Probe, PrometheusProbe


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe."""

    ok: bool
    probe: str
    value: str
    limit: str

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return f"{self.probe}: {self.value} (limit {self.limit}) {verdict}"


def probe_name(probe: Probe) -> str:
    """How a probe is named in messages."""
    if probe.http is not None:
        return f"http {probe.http.url}"
    assert probe.prometheus is not None
    return f"prometheus {probe.prometheus.query!r}"


def check_http(spec: HttpProbe, client: httpx.Client, timing: Timing) -> ProbeResult:
    """One GET: the status must match and, if set, the latency must stay under the limit."""
    name = f"http {spec.url}"
    limit = f"status {spec.expect_status}" + (
        f", latency <= {spec.max_latency * 1000:.0f}ms" if spec.max_latency is not None else ""
    )
    started = timing.clock()
    try:
        response = client.get(spec.url, headers=spec.headers, timeout=spec.timeout)
    except httpx.TimeoutException:
        return ProbeResult(False, name, f"no answer within {spec.timeout}s", limit)
    except httpx.HTTPError as exc:
        return ProbeResult(False, name, f"{type(exc).__name__}: {exc}", limit)
    latency = timing.clock() - started
    if response.status_code != spec.expect_status:
        return ProbeResult(False, name, f"status {response.status_code}", limit)
    if spec.max_latency is not None and latency > spec.max_latency:
        return ProbeResult(False, name, f"latency {latency * 1000:.0f}ms", limit)
    return ProbeResult(True, name, f"status {response.status_code}, {latency * 1000:.0f}ms", limit)


def check_prometheus(spec: PrometheusProbe, client: httpx.Client) -> ProbeResult:
    """An instant query; every value returned must lie within min..max."""
    name = f"prometheus {spec.query!r}"
    bounds = [f">= {spec.min:g}"] if spec.min is not None else []
    bounds += [f"<= {spec.max:g}"] if spec.max is not None else []
    limit = " and ".join(bounds) or "any value"
    url = spec.url.rstrip("/") + "/api/v1/query"
    try:
        response = client.get(url, params={"query": spec.query}, timeout=10.0)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return ProbeResult(False, name, f"query failed: {type(exc).__name__}: {exc}", limit)
    if response.status_code != 200 or body.get("status") != "success":
        error = body.get("error", f"HTTP {response.status_code}")
        return ProbeResult(False, name, f"query failed: {error}", limit)
    data = body.get("data", {})
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind in ("scalar", "string"):
            values = [float(result[1])]
        elif kind == "vector":
            values = [float(sample["value"][1]) for sample in result]
        else:
            return ProbeResult(False, name, f"unsupported result type {kind!r}", limit)
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        return ProbeResult(False, name, f"malformed answer: {exc}", limit)
    if not values:
        # No series at all: the metric is missing, so nothing is known about green.
        return ProbeResult(False, name, "no data", limit)
    for value in values:
        if math.isnan(value):
            return ProbeResult(False, name, "NaN", limit)
        if spec.max is not None and value > spec.max:
            return ProbeResult(False, name, f"{value:g}", limit)
        if spec.min is not None and value < spec.min:
            return ProbeResult(False, name, f"{value:g}", limit)
    shown = ", ".join(f"{v:g}" for v in values[:5])
    return ProbeResult(True, name, shown, limit)


def check(probe: Probe, client: httpx.Client, timing: Timing) -> ProbeResult:
    """Run one probe, with its retries (HTTP only), waiting a little between tries."""
    if probe.prometheus is not None:
        return check_prometheus(probe.prometheus, client)
    assert probe.http is not None
    result = check_http(probe.http, client, timing)
    for attempt in range(probe.http.retries):
        if result.ok:
            break
        timing.sleep(min(0.5 * 2**attempt, 5.0))
        result = check_http(probe.http, client, timing)
    return result
