"""gateway_api backend: an HTTPRoute's weights over HTTP against the kmock emulator, with
the official client. The test plays the API server (kmock, plus 403s where RBAC would
refuse) and reads the route as the Gateway controller would."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from pathlib import Path
from typing import Any

import pytest

from migrator import commands
from migrator.errors import GateRefused
from migrator.switch import ALL_BLUE, ALL_GREEN, Split
from migrator.switch.gateway_api import GatewayApi, GatewayApiSettings
from tests.support import kube_switch
from tests.support.kmock_cluster import NS, Cluster
from tests.support.kube_switch import STEPS, green_moves
from tests.support.switch_env import FakePrometheus, phase, traffic_events

ROUTES = "gateway.networking.k8s.io/v1/httproutes"


def httproute(*, accepted: str = "True", green: str = "api-green") -> dict[str, Any]:
    """An HTTPRoute as a Gateway controller leaves it: a /healthz rule to blue only, and
    the rule that splits, all on blue; both conditions of its one parent as given."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "api", "namespace": NS, "generation": 1},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "hostnames": ["api.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/healthz"}}],
                    "backendRefs": [{"name": "api-blue", "port": 8080}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"name": "api-blue", "port": 8080, "weight": 100},
                        {"name": green, "port": 8080, "weight": 0},
                    ],
                },
            ],
        },
        "status": {
            "parents": [
                {
                    "parentRef": {"name": "edge", "namespace": NS},
                    "controllerName": "example.com/gateway-controller",
                    "conditions": [
                        {"type": "Accepted", "status": accepted, "reason": "Accepted"},
                        {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs"},
                    ],
                }
            ]
        },
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with kube_switch.cluster(tmp_path, {ROUTES: httproute()}, controller=False) as c:
        yield c


def weights(cluster: Cluster) -> tuple[int | None, int | None]:
    """(blue, green) weights of the splitting rule, as the Gateway controller reads them."""
    route = cluster.custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", NS, "httproutes", "api"
    )
    refs = {r["name"]: r.get("weight") for r in route["spec"]["rules"][1]["backendRefs"]}
    return refs["api-blue"], refs["api-green"]


def section(cluster: Cluster, **gateway: Any) -> dict[str, Any]:
    blue, green = {"service": "api-blue", "port": 8080}, {"service": "api-green", "port": 8080}
    settings = {"route": "api", "blue": blue, "green": green, **gateway}
    return kube_switch.section("gateway_api", cluster, settings, duration="500ms")


def backend(cluster: Cluster, **gateway: Any) -> GatewayApi:
    return GatewayApi(GatewayApiSettings.model_validate(section(cluster, **gateway)["gateway_api"]))


def test_a_plan_moves_1_5_25_50_100_with_the_watch_between_steps_and_rolls_back(
    fresh_db: str, cluster: Cluster
) -> None:
    prometheus = FakePrometheus(0.0)
    try:
        s = section(cluster)
        s["watch"]["probes"] = [
            {"prometheus": {"url": prometheus.url, "query": "errors", "max": 0.1}}
        ]
        plan, opts = kube_switch.ready(fresh_db, s)
        time = kube_switch.ClusterTime()
        seen: list[tuple[int | None, int | None]] = []  # the route at every round of a watch
        time.after_sleep = lambda: seen.append(weights(cluster))

        result = commands.switch(plan, opts, timing=time.timing)
    finally:
        prometheus.stop()

    assert result.after == {"blue": 0, "green": 100}
    assert [m["to"]["green"] for m in result.moves] == STEPS
    assert weights(cluster) == (0, 100)
    # Each step was watched at its own split, in order, for 500ms: 5 sleeps of 100ms, and
    # probed once per round: after each sleep and once first.
    runs = [(split, len(list(rounds))) for split, rounds in groupby(seen)]
    assert runs == [((100 - p, p), 5) for p in STEPS]
    assert len(prometheus.queries) == len(seen) + len(STEPS)
    assert phase(fresh_db, plan.release) == "switched"

    kube_switch.rolled_back(fresh_db, plan, opts)
    assert weights(cluster) == (100, 0)
    moves = [
        (e["details"]["from"]["green"], e["details"]["to"]["green"])
        for e in traffic_events(fresh_db, plan.release)
    ]
    assert moves == [(0, 1), (1, 5), (5, 25), (25, 50), (50, 100), (100, 0)]
    events = traffic_events(fresh_db, plan.release)
    assert all(
        e["details"]["backend"] == f"gateway_api httproute {NS}/api (api-blue -> api-green)"
        for e in events
    )


def test_a_failed_watch_puts_all_traffic_back_on_blue(fresh_db: str, cluster: Cluster) -> None:
    plan = kube_switch.failed_watch(
        fresh_db,
        section(cluster),
        errors_when=lambda: weights(cluster) == (75, 25),
        match=r"step 3/5 \(25% green\).*gave 0.5, limit <= 0.1",
        time=kube_switch.ClusterTime(),
    )
    assert weights(cluster) == (100, 0)
    assert green_moves(fresh_db, plan.release) == [1, 5, 25, 0]


def test_current_and_set_split_read_and_write_the_weights(cluster: Cluster) -> None:
    b = backend(cluster)
    b.preflight()
    assert b.current() == ALL_BLUE
    assert b.set_split(Split(25)) == Split(25)
    assert weights(cluster) == (75, 25)
    route = cluster.emulator.objects[ROUTES, NS, "api"]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "api-blue", "port": 8080}]
    assert b.set_split(ALL_GREEN) == ALL_GREEN
    assert weights(cluster) == (0, 100)
    assert b.describe() == f"gateway_api httproute {NS}/api (api-blue -> api-green)"


@pytest.mark.parametrize(
    ("gateway", "route", "message"),
    [
        pytest.param(
            {"route": "nope"},
            None,
            r"get httproutes\.gateway\.networking\.k8s\.io nope: not found in namespace prod",
            id="route-not-found",
        ),
        pytest.param(
            {},
            httproute(green="api-canary"),
            "no rule sends to both api-blue .blue. and api-green .green.",
            id="service-not-referenced",
        ),
        pytest.param(
            {"rule": 0},
            None,
            r"rule 0 does not send to both api-blue \(blue\) and api-green \(green\) with their ports \(its backendRefs: api-blue\)",
            id="rule-without-green",
        ),
        pytest.param({"rule": 7}, None, "has 2 rule.s.; there is no rule 7", id="no-such-rule"),
        pytest.param(
            {"green": {"service": "api-green", "port": 9090}},
            None,
            "no rule sends to both",
            id="port-not-referenced",
        ),
        pytest.param(
            {},
            httproute(accepted="False"),
            "parent prod/edge: condition Accepted is False",
            id="not-accepted",
        ),
    ],
)
def test_preflight_refusals_move_nothing(
    cluster: Cluster, gateway: dict[str, Any], route: dict[str, Any] | None, message: str
) -> None:
    if route is not None:
        cluster.emulator.objects[ROUTES, NS, "api"] = route
    kube_switch.preflight_refused(cluster, ROUTES, backend(cluster, **gateway), message)


def test_a_403_names_the_verb_the_resource_and_the_role_rule(
    fresh_db: str, cluster: Cluster
) -> None:
    plan, opts = kube_switch.ready(fresh_db, section(cluster))
    cluster.emulator.forbidden.add(("patch", "httproutes"))
    message = kube_switch.forbidden(
        "gateway_api", "patch", "httproutes", "gateway.networking.k8s.io", "api"
    )
    kube_switch.switch_refused(fresh_db, plan, opts, message, kube_switch.ClusterTime())
    assert weights(cluster) == (100, 0)

    cluster.emulator.forbidden = {("get", "httproutes")}
    with pytest.raises(
        GateRefused, match=r"get httproutes\.gateway\.networking\.k8s\.io api .*forbidden"
    ):
        backend(cluster).preflight()


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("[5, 1, 100]", "steps must rise strictly and end at 100"),
        ("[1, 5, 5, 100]", "steps must rise strictly and end at 100"),
        ("[1, 5, 25, 50]", "steps must rise strictly and end at 100"),
        ("[0, 100]", "greater than or equal to 1"),
        ("[1, 150]", "less than or equal to 100"),
        ("[1.5, 100]", "valid integer"),
        ("['5', 100]", "valid integer"),
    ],
)
def test_steps_that_are_not_rising_integers_1_to_100_are_refused(steps: str, message: str) -> None:
    text = (
        "release: r\nswitch:\n  gateway_api:\n    route: api\n    blue: {service: b}\n"
        f"    green: {{service: g}}\n  steps: {steps}\n"
    )
    assert "plan.yaml:7:" in str(kube_switch.plan_refused(text, message))
