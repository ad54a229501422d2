"""istio backend: a VirtualService route's subset weights over HTTP against the kmock
emulator, with the official client (kmock plays the API server, 403s included)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator import commands
from migrator.switch import ALL_BLUE, Split
from migrator.switch.istio import Istio, IstioSettings
from tests.support import kube_switch
from tests.support.kmock_cluster import NS, Cluster
from tests.support.kube_switch import green_moves

SERVICES = "networking.istio.io/v1/virtualservices"
RULES = "networking.istio.io/v1/destinationrules"
HOST = "api.prod.svc.cluster.local"


def virtual_service(green: str = "v2") -> dict[str, Any]:
    """A VirtualService with a header-matched route to green only, and the default route
    all on blue."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "api", "namespace": NS},
        "spec": {
            "hosts": [HOST],
            "http": [
                {
                    "name": "testers",
                    "match": [{"headers": {"x-tester": {"exact": "1"}}}],
                    "route": [{"destination": {"host": HOST, "subset": green}}],
                },
                {
                    "name": "default",
                    "route": [
                        {"destination": {"host": HOST, "subset": "v1"}, "weight": 100},
                        {"destination": {"host": HOST, "subset": green}, "weight": 0},
                    ],
                },
            ],
        },
    }


def destination_rule(*subsets: str, host: str = HOST) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "api", "namespace": NS},
        "spec": {
            "host": host,
            "subsets": [{"name": s, "labels": {"version": s}} for s in subsets],
        },
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    objects = {SERVICES: virtual_service(), RULES: destination_rule("v1", "v2")}
    with kube_switch.cluster(tmp_path, objects, controller=False) as c:
        yield c


def weights(cluster: Cluster) -> tuple[int | None, int | None]:
    """(blue, green) weights of the default route, as istiod reads them."""
    vs = cluster.custom.get_namespaced_custom_object(
        "networking.istio.io", "v1", NS, "virtualservices", "api"
    )
    dests = {d["destination"]["subset"]: d.get("weight") for d in vs["spec"]["http"][1]["route"]}
    return dests["v1"], dests["v2"]


def section(cluster: Cluster, **istio: Any) -> dict[str, Any]:
    settings = {"virtual_service": "api", "host": HOST, "blue": {"subset": "v1"}}
    return kube_switch.section("istio", cluster, {**settings, "green": {"subset": "v2"}, **istio})


def backend(cluster: Cluster, **istio: Any) -> Istio:
    return Istio(IstioSettings.model_validate(section(cluster, **istio)["istio"]))


def test_switch_weighted_steps_and_manual_rollback(fresh_db: str, cluster: Cluster) -> None:
    plan, opts = kube_switch.ready(fresh_db, section(cluster))
    time = kube_switch.ClusterTime()
    seen: list[tuple[int | None, int | None]] = []
    time.after_sleep = lambda: seen.append(weights(cluster))

    result = commands.switch(plan, opts, timing=time.timing)

    assert [m["to"]["green"] for m in result.moves] == [1, 5, 25, 50, 100]
    assert list(dict.fromkeys(seen)) == [(99, 1), (95, 5), (75, 25), (50, 50), (0, 100)]
    assert weights(cluster) == (0, 100)
    # The header-matched route to green is left as it was.
    vs = cluster.emulator.objects[SERVICES, NS, "api"]
    assert vs["spec"]["http"][0]["route"] == [{"destination": {"host": HOST, "subset": "v2"}}]

    kube_switch.rolled_back(fresh_db, plan, opts)
    assert weights(cluster) == (100, 0)
    assert green_moves(fresh_db, plan.release) == [1, 5, 25, 50, 100, 0]


def test_a_failed_watch_puts_all_traffic_back_on_blue(fresh_db: str, cluster: Cluster) -> None:
    plan = kube_switch.failed_watch(
        fresh_db,
        section(cluster),
        errors_when=lambda: weights(cluster) == (95, 5),
        match=r"step 2/5 \(5% green\).*gave 0.5",
        time=kube_switch.ClusterTime(),
    )
    assert weights(cluster) == (100, 0)
    assert green_moves(fresh_db, plan.release) == [1, 5, 0]


def test_current_and_set_split(cluster: Cluster) -> None:
    b = backend(cluster)
    b.preflight()
    assert b.current() == ALL_BLUE
    assert b.set_split(Split(25)) == Split(25)
    assert weights(cluster) == (75, 25)
    assert backend(cluster, route="default").current() == Split(25)


@pytest.mark.parametrize(
    ("istio", "objects", "message"),
    [
        pytest.param(
            {"virtual_service": "nope"},
            {},
            r"get virtualservices\.networking\.istio\.io nope: not found in namespace prod",
            id="virtual-service-not-found",
        ),
        pytest.param(
            {},
            {SERVICES: virtual_service(green="v3")},
            r"no http route sends to both subsets v1 \(blue\) and v2 \(green\)",
            id="subset-not-referenced",
        ),
        pytest.param(
            {"route": "testers"},
            {},
            "http route testers does not send to both subsets",
            id="route-without-blue",
        ),
        pytest.param(
            {"route": "canary"},
            {},
            r"no http route named canary \(named: testers, default\)",
            id="no-such-route",
        ),
        pytest.param(
            {},
            {RULES: destination_rule("v1")},
            r"destinationrule api for host .* defines no subset v2 \(it defines: v1\)",
            id="destination-rule-without-green",
        ),
        pytest.param(
            {},
            {RULES: destination_rule("v1", "v2", host="other.prod.svc.cluster.local")},
            "no DestinationRule in namespace prod for host",
            id="no-destination-rule",
        ),
    ],
)
def test_preflight_refusals_move_nothing(
    cluster: Cluster, istio: dict[str, Any], objects: dict[str, Any], message: str
) -> None:
    for resource, obj in objects.items():
        cluster.emulator.objects[resource, NS, "api"] = obj
    kube_switch.preflight_refused(cluster, SERVICES, backend(cluster, **istio), message)


def test_a_403_names_the_verb_the_resource_and_the_role_rule(
    fresh_db: str, cluster: Cluster
) -> None:
    plan, opts = kube_switch.ready(fresh_db, section(cluster))
    cluster.emulator.forbidden.add(("list", "destinationrules"))
    message = kube_switch.forbidden("istio", "list", "destinationrules", "networking.istio.io")
    kube_switch.switch_refused(fresh_db, plan, opts, message, kube_switch.ClusterTime())
    cluster.emulator.forbidden = {("patch", "virtualservices")}
    kube_switch.switch_refused(
        fresh_db,
        plan,
        opts,
        r"patch virtualservices\.networking\.istio\.io api .*forbidden",
        kube_switch.ClusterTime(),
    )
    assert weights(cluster) == (100, 0)


@pytest.mark.parametrize("steps", kube_switch.BAD_STEPS)
def test_steps_that_are_not_rising_integers_1_to_100_are_refused(steps: str) -> None:
    text = (
        "release: r\nswitch:\n  istio: {virtual_service: a, host: h, blue: {subset: b}, "
        f"green: {{subset: g}}}}\n  steps: {steps}\n"
    )
    kube_switch.plan_refused(text, kube_switch.BAD_STEPS_MESSAGE)
