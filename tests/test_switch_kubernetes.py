"""kubernetes backend over HTTP against the kmock emulator, with the official client.

The test plays the API server's generation bump and the deployment controller's
status writes (tests/support/kmock_cluster.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator import commands
from migrator.errors import GateRefused
from migrator.switch import ALL_BLUE, ALL_GREEN, Split, SwitchFailed
from migrator.switch.kubernetes import ORIGINAL_REPLICAS, Kubernetes, KubernetesSettings
from tests.support import kube_switch
from tests.support.kmock_cluster import NS, Cluster
from tests.support.kube_switch import green_moves
from tests.support.switch_env import phase, traffic_events


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with kube_switch.cluster(tmp_path) as c:
        yield c


def _section(cluster: Cluster, steps: list[int] | None = None, **kube: Any) -> dict[str, Any]:
    settings = {
        "service": "api",
        "selector": {"key": "version", "blue": "blue", "green": "green"},
        "blue": {"deployment": "api-blue"},
        "green": {"deployment": "api-green", "image": "registry.test/api:v2"},
        "shared_selector": {"app": "api"},
        "rollout_timeout": "20s",
        **kube,
    }
    return kube_switch.section("kubernetes", cluster, settings, steps=steps)


def _backend(cluster: Cluster, **kube: Any) -> Kubernetes:
    settings = KubernetesSettings.model_validate(_section(cluster, **kube)["kubernetes"])
    return Kubernetes(settings, poll=0.02)


def test_switch_sets_the_image_waits_for_the_rollout_and_patches_the_selector(
    fresh_db: str, cluster: Cluster
) -> None:
    plan, opts = kube_switch.ready(fresh_db, _section(cluster, blue_after_switch="zero"))

    result = commands.switch(plan, opts, timing=kube_switch.ClusterTime(cluster).timing)

    green = cluster.deployment("api-green")
    assert green.spec.template.spec.containers[0].image == "registry.test/api:v2"
    assert green.status.observed_generation == green.metadata.generation == 2
    assert cluster.selector() == {"app": "api", "version": "green"}
    assert result.after == {"blue": 0, "green": 100}
    # blue_after_switch: zero keeps the deployment, at 0 replicas, as the rollback target.
    blue = cluster.deployment("api-blue")
    assert blue.spec.replicas == 0 and blue.metadata.annotations[ORIGINAL_REPLICAS] == "4"
    assert phase(fresh_db, plan.release) == "switched"

    # The rollback brings blue back up, waits for it, then moves the selector.
    kube_switch.rolled_back(fresh_db, plan, opts)
    assert cluster.selector() == {"app": "api", "version": "blue"}
    blue = cluster.deployment("api-blue")
    assert blue.spec.replicas == 4 and blue.status.available_replicas == 4
    moves = [
        (e["details"]["from"], e["details"]["to"]) for e in traffic_events(fresh_db, plan.release)
    ]
    assert moves == [
        ({"blue": 100, "green": 0}, {"blue": 0, "green": 100}),
        ({"blue": 0, "green": 100}, {"blue": 100, "green": 0}),
    ]


def test_weighted_steps_select_both_and_split_by_replicas(cluster: Cluster) -> None:
    backend = _backend(cluster)
    backend.preflight()
    assert backend.current() == ALL_BLUE

    assert backend.set_split(Split(25)) == Split(25)
    assert cluster.selector() == {"app": "api"}  # both versions selected
    assert cluster.replicas() == (3, 1)
    assert backend.current() == Split(25)

    assert backend.set_split(Split(50)) == Split(50)
    assert cluster.replicas() == (2, 2)

    assert backend.set_split(ALL_GREEN) == ALL_GREEN
    assert cluster.selector() == {"app": "api", "version": "green"}
    assert cluster.replicas() == (2, 4)  # green back at its own size before it takes all
    backend.after_watch()  # keep: blue back at its size, a hot rollback target
    assert cluster.replicas()[0] == 4

    assert backend.set_split(ALL_BLUE) == ALL_BLUE
    assert cluster.selector() == {"app": "api", "version": "blue"}


def test_coarse_replica_counts_report_the_split_they_really_give(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, blue_replicas=3, green_replicas=3)
    try:
        backend = _backend(cluster)
        backend.preflight()
        assert backend.set_split(Split(10)) == Split(33)  # 1 green of 3: the finest step
        assert cluster.replicas() == (2, 1)
    finally:
        cluster.stop()


def test_preflight_refuses_a_service_that_does_not_select_blue(cluster: Cluster) -> None:
    cluster.core.patch_namespaced_service("api", NS, {"spec": {"selector": {"version": "canary"}}})
    with pytest.raises(GateRefused, match=r"selects .*canary.*expected version: blue"):
        _backend(cluster).preflight()


def test_preflight_refuses_a_missing_green_deployment(cluster: Cluster) -> None:
    with pytest.raises(GateRefused, match="read deployment api-grean: not found"):
        _backend(cluster, green={"deployment": "api-grean"}).preflight()


def test_a_rollout_past_its_progress_deadline_fails_and_moves_nothing(cluster: Cluster) -> None:
    cluster.bad_images.add("registry.test/api:broken")
    backend = _backend(
        cluster, green={"deployment": "api-green", "image": "registry.test/api:broken"}
    )
    with pytest.raises(SwitchFailed, match="exceeded its progress deadline.*api:broken"):
        backend.preflight()
    assert cluster.selector() == {"app": "api", "version": "blue"}


def test_an_unreachable_cluster_is_a_runtime_failure(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {}}]\ncontexts: [{name: t, context: {cluster: c, user: u}}]\n"
    )
    settings = KubernetesSettings.model_validate(
        {
            "service": "api",
            "selector": {"key": "version", "blue": "blue", "green": "green"},
            "blue": {"deployment": "b"},
            "green": {"deployment": "g"},
            "kubeconfig": str(config),
        }
    )
    with pytest.raises(SwitchFailed, match="kubernetes: read service api"):
        Kubernetes(settings).preflight()


def test_preflight_returns_only_once_the_new_image_is_rolled_out(cluster: Cluster) -> None:
    cluster.lag = 15  # the controller takes ~150ms to catch up
    _backend(cluster).preflight()
    green = cluster.deployment("api-green")  # read at once: no time for a late controller
    assert green.spec.template.spec.containers[0].image == "registry.test/api:v2"
    assert green.metadata.generation == 2
    assert green.status.observed_generation == 2 and green.status.available_replicas == 4


def test_a_failed_watch_during_a_weighted_step_puts_blue_back_whole(
    fresh_db: str, cluster: Cluster
) -> None:
    plan = kube_switch.failed_watch(
        fresh_db,
        _section(cluster, steps=[25, 100]),
        # errors once green serves its quarter: during step 1's watch
        errors_when=lambda: cluster.replicas() == (3, 1),
        match=r"step 1/2 \(25% green\).*gave 0.5, limit <= 0.1",
        time=kube_switch.ClusterTime(cluster),
    )
    assert cluster.selector() == {"app": "api", "version": "blue"}
    blue = cluster.deployment("api-blue")
    assert blue.spec.replicas == 4 and blue.status.available_replicas == 4
    assert green_moves(fresh_db, plan.release) == [25, 0]
