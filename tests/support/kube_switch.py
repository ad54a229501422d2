"""What the tests of the Kubernetes switch backends (kubernetes, gateway_api, istio,
argo_rollouts) share: a kmock cluster holding a backend's objects, the plan's switch
section, a switch whose watch probe fails at a chosen moment, and the checks that a
refused or failed switch said so in one line, with its exit code, and left traffic and
the backend's object as they were."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest

from migrator import commands
from migrator.errors import ExitCode, GateRefused, PlanError
from migrator.plan.loader import parse_plan
from migrator.switch import WatchFailed
from tests.support.kmock_cluster import NS, Cluster
from tests.support.switch_env import (
    FakePrometheus,
    SleptTime,
    phase,
    ready_release,
    switch_plan,
    traffic_events,
)

STEPS = [1, 5, 25, 50, 100]


class Settles(Protocol):
    def settled(self) -> None: ...


class ClusterTime(SleptTime):
    """SleptTime whose sleeps wait, instead of for the time, for the event the code polls
    for: each of `controllers` (a Cluster's deployment controller, a RolloutController)
    having caught up with what the code changed. With none, a sleep waits for nothing:
    kmock without controllers changes nothing by itself."""

    def __init__(self, *controllers: Settles) -> None:
        super().__init__()
        self.controllers = controllers

    def wait(self, seconds: float) -> None:
        for controller in self.controllers:
            controller.settled()


# Steps that are not integers rising strictly from 1 to 100, as the plan's fourth line
# (`  steps: ...`), and what the plan loader says of each.
BAD_STEPS = ["[5, 1, 100]", "[1, 5, 50]", "[0, 100]", "[2.5, 100]"]
BAD_STEPS_MESSAGE = (
    r"plan\.yaml:4:\d+: (steps: steps must rise|Input should be (a valid integer|greater))"
)


@contextmanager
def cluster(
    tmp_path: Path, objects: Mapping[str, dict[str, Any]] | None = None, **kwargs: Any
) -> Iterator[Cluster]:
    """A kmock cluster (see Cluster for `kwargs`) that also holds `objects`, each under
    its resource (``"group/version/plural"``) in namespace prod, named after its metadata."""
    c = Cluster(tmp_path, **kwargs)
    try:
        for resource, obj in (objects or {}).items():
            c.emulator.objects[resource, NS, obj["metadata"]["name"]] = obj
        yield c
    finally:
        c.stop()


def section(
    backend: str,
    cluster: Cluster,
    settings: Mapping[str, Any],
    *,
    steps: list[int] | None = STEPS,
    duration: str = "300ms",
    **extra: Any,
) -> dict[str, Any]:
    """A plan's switch section for `backend` in namespace prod of `cluster`: `settings`
    are the backend's own keys; watched for `duration` every 100ms after each of `steps`
    (None: the plan's default, all at once)."""
    found: dict[str, Any] = {
        backend: {"namespace": NS, "kubeconfig": str(cluster.kubeconfig), **settings},
        "watch": {"duration": duration, "interval": "100ms"},
        **extra,
    }
    if steps is not None:
        found["steps"] = list(steps)
    return found


def ready(url: str, switch: dict[str, Any]) -> tuple[Any, commands.Options]:
    """The plan of `switch`, expanded and checked on `url`: ready to switch."""
    plan = switch_plan(switch)
    return plan, ready_release(url, plan)


def green_moves(url: str, release: str) -> list[int]:
    """Green's percent after each recorded traffic change, oldest first."""
    return [e["details"]["to"]["green"] for e in traffic_events(url, release)]


def failed_watch(
    url: str,
    switch: dict[str, Any],
    errors_when: Callable[[], bool],
    match: str,
    time: SleptTime,
) -> Any:
    """Switches by the plan of `switch`, on the clock `time`, with a Prometheus probe
    (errors, at most 0.1) that reads 0.5 from the first round of a watch at which
    `errors_when()` holds. The
    switch must fail its watch with a message matching `match`, and exit 3, with the
    release back at expanded. Returns the plan."""
    prometheus = FakePrometheus(0.0)
    try:
        switch["watch"]["probes"] = [
            {"prometheus": {"url": prometheus.url, "query": "errors", "max": 0.1}}
        ]
        plan, opts = ready(url, switch)

        def errors() -> None:
            if errors_when():
                prometheus.value = 0.5

        time.after_sleep = errors
        with pytest.raises(WatchFailed, match=match) as failed:
            commands.switch(plan, opts, timing=time.timing)
    finally:
        prometheus.stop()
    assert failed.value.exit_code == ExitCode.REFUSED
    assert phase(url, plan.release) == "expanded"
    return plan


def rolled_back(url: str, plan: Any, opts: commands.Options, green: int = 100) -> None:
    """`migrator rollback` from `green` percent on green: all on blue, the release back
    at expanded."""
    back = commands.rollback(plan, opts)
    assert back.ran and f"{green}% green -> 0% green" in back.ran[0]
    assert phase(url, plan.release) == "expanded"


def forbidden(backend: str, verb: str, resource: str, group: str, name: str | None = None) -> str:
    """What `backend` says (a regex) when RBAC refuses it `verb` on `resource` of API
    `group` (on the object `name`, if it asks for one): the request, and the Role rule
    that would allow it."""
    target = f"{resource}.{group}" + (f" {name}" if name else "")
    names = f'resourceNames: ["{name}"], ' if name else ""
    return (
        re.escape(f"{backend}: {verb} {target} in namespace {NS}: forbidden (HTTP 403)")
        + ".*"
        + re.escape(
            f'{{apiGroups: ["{group}"], resources: ["{resource}"], {names}verbs: ["{verb}"]}}'
        )
    )


def switch_refused(
    url: str, plan: Any, opts: commands.Options, match: str, time: SleptTime
) -> None:
    """The switch, on the clock `time`, is refused by a gate (exit 3) with a message
    matching `match`, and records no traffic change."""
    with pytest.raises(GateRefused, match=match) as refused:
        commands.switch(plan, opts, timing=time.timing)
    assert refused.value.exit_code == ExitCode.REFUSED
    assert traffic_events(url, plan.release) == []


def preflight_refused(cluster: Cluster, resource: str, backend: Any, match: str) -> None:
    """`backend`'s preflight is refused by a gate (exit 3) with a message matching
    `match`, and leaves the object api of `resource` as it was."""
    before = cluster.emulator.objects[resource, NS, "api"].raw
    with pytest.raises(GateRefused, match=match) as refused:
        backend.preflight()
    assert refused.value.exit_code == ExitCode.REFUSED
    assert cluster.emulator.objects[resource, NS, "api"].raw == before


def plan_refused(text: str, match: str) -> PlanError:
    """The plan `text` (file plan.yaml) is refused as bad input (exit 2) with a message
    matching `match`."""
    with pytest.raises(PlanError, match=match) as refused:
        parse_plan(text, "plan.yaml")
    assert refused.value.exit_code == ExitCode.BAD_INPUT
    return refused.value
