"""argo_rollouts backend: an Argo Rollout driven over HTTP against the kmock emulator,
with the official client. The test plays the Rollouts controller
(tests/support/kmock_cluster.py RolloutController): it runs the canary's steps to the
next pause after each promote, switches a promoted blueGreen, and answers an abort."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator import commands
from migrator.errors import GateRefused
from migrator.switch import ALL_BLUE, Split, SwitchFailed
from migrator.switch.argo_rollouts import ArgoRollouts, ArgoRolloutsSettings
from tests.support import kube_switch
from tests.support.kmock_cluster import (
    NEW_HASH,
    NS,
    OLD_HASH,
    REPLICASETS,
    ROLLOUTS,
    Cluster,
    RolloutController,
    replicaset,
    rollout,
)
from tests.support.kube_switch import green_moves
from tests.support.switch_env import phase

# Ends with setWeight 100 and a pause: all traffic on green, and an abort still possible.
CANARY = [step for weight in (1, 5, 25, 50, 100) for step in ({"setWeight": weight}, {"pause": {}})]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with kube_switch.cluster(
        tmp_path, {ROLLOUTS: rollout("canary", steps=CANARY)}, controller=False
    ) as c:
        c.emulator.objects[REPLICASETS, NS, f"api-{OLD_HASH}"] = replicaset(OLD_HASH, 4, 4)
        c.emulator.objects[REPLICASETS, NS, f"api-{NEW_HASH}"] = replicaset(NEW_HASH, 1, 1)
        yield c


@pytest.fixture
def controller(cluster: Cluster) -> Iterator[RolloutController]:
    ctl = RolloutController(cluster)
    yield ctl
    ctl.stop()


def status(cluster: Cluster) -> dict[str, Any]:
    ro = cluster.custom.get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NS, "rollouts", "api"
    )
    found: dict[str, Any] = ro["status"]
    return found


def section(cluster: Cluster, steps: list[int] = kube_switch.STEPS, **argo: Any) -> dict[str, Any]:
    settings = {"rollout": "api", "timeout": "30s", **argo}
    return kube_switch.section("argo_rollouts", cluster, settings, steps=steps)


def backend(cluster: Cluster, **argo: Any) -> ArgoRollouts:
    settings = ArgoRolloutsSettings.model_validate(section(cluster, **argo)["argo_rollouts"])
    return ArgoRollouts(settings, poll=0.02)


def test_each_step_promotes_the_canary_to_its_next_pause_and_the_end_after_the_watch(
    fresh_db: str, cluster: Cluster, controller: RolloutController
) -> None:
    plan, opts = kube_switch.ready(fresh_db, section(cluster))

    result = commands.switch(plan, opts, timing=kube_switch.ClusterTime(controller).timing)

    # Traffic was at the Rollout's first pause (1%): watched first, then one promote per step.
    assert result.before == {"blue": 99, "green": 1}
    assert green_moves(fresh_db, plan.release) == [5, 25, 50, 100]
    assert controller.acted == ["pause at 3", "pause at 5", "pause at 7", "pause at 9", "complete"]
    final = status(cluster)
    assert final["stableRS"] == NEW_HASH and final["currentStepIndex"] == len(CANARY)
    assert phase(fresh_db, plan.release) == "switched"


def test_a_failed_watch_aborts_the_rollout(
    fresh_db: str, cluster: Cluster, controller: RolloutController
) -> None:
    plan = kube_switch.failed_watch(
        fresh_db,
        section(cluster),
        # the pause after setWeight 25
        errors_when=lambda: status(cluster).get("currentStepIndex") == 5,
        match=r"step 3/5 \(25% green\).*gave 0.5",
        time=kube_switch.ClusterTime(controller),
    )
    assert green_moves(fresh_db, plan.release) == [5, 25, 0]
    final = status(cluster)
    assert final["abort"] is True and final["currentStepIndex"] == 0
    assert final["stableRS"] == OLD_HASH
    assert controller.acted[-1] == "abort"
    assert backend(cluster).current() == ALL_BLUE


def test_manual_rollback_aborts(
    fresh_db: str, cluster: Cluster, controller: RolloutController
) -> None:
    plan, opts = kube_switch.ready(fresh_db, section(cluster))
    commands.switch(plan, opts, step=4, timing=kube_switch.ClusterTime(controller).timing)  # to 50%
    assert status(cluster)["currentStepIndex"] == 7
    kube_switch.rolled_back(fresh_db, plan, opts, green=50)
    assert status(cluster)["abort"] is True
    assert green_moves(fresh_db, plan.release) == [50, 0]


def test_blue_green_is_promoted_from_its_pre_promotion_pause(
    fresh_db: str, cluster: Cluster, controller: RolloutController
) -> None:
    cluster.emulator.objects[ROLLOUTS, NS, "api"] = rollout("blueGreen")
    cluster.emulator.objects[REPLICASETS, NS, f"api-{NEW_HASH}"] = replicaset(NEW_HASH, 4, 4)
    b = backend(cluster)
    b.preflight()
    assert b.current() == ALL_BLUE
    with pytest.raises(GateRefused, match="is blueGreen: it moves all traffic at once"):
        b.set_split(Split(25))
    assert controller.acted == []

    plan, opts = kube_switch.ready(fresh_db, section(cluster, steps=[100]))
    result = commands.switch(plan, opts, timing=kube_switch.ClusterTime(controller).timing)
    assert result.after == {"blue": 0, "green": 100}
    assert status(cluster)["blueGreen"]["activeSelector"] == NEW_HASH
    # Promoted, blue-green is done: an abort cannot undo it, and the rollback says how.
    with pytest.raises(SwitchFailed, match="fully promoted.*kubectl argo rollouts undo api"):
        commands.rollback(plan, opts)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"argo": {"rollout": "nope"}},
            r"get rollouts\.argoproj\.io nope: not found in namespace prod",
            id="rollout-not-found",
        ),
        pytest.param(
            {"status": {"pauseConditions": None, "phase": "Progressing", "controllerPause": None}},
            r"is not paused \(phase Progressing, step 1 of 10",
            id="not-paused",
        ),
        pytest.param(
            {"status": {"abort": True, "phase": "Degraded"}},
            "is aborted",
            id="aborted",
        ),
        pytest.param(
            {"replicaset": replicaset(NEW_HASH, 1, 0)},
            f"new ReplicaSet api-{NEW_HASH} at 0 of 1 replicas available",
            id="new-replicaset-unavailable",
        ),
        pytest.param(
            {"status": {"currentPodHash": "0000000"}},
            r"get replicasets\.apps api-0000000: not found",
            id="new-replicaset-missing",
        ),
    ],
)
def test_preflight_refusals_move_nothing(
    cluster: Cluster, change: dict[str, Any], message: str
) -> None:
    if "status" in change:
        cluster.emulator.objects[ROLLOUTS, NS, "api"].patch({"status": change["status"]})
    if "replicaset" in change:
        cluster.emulator.objects[REPLICASETS, NS, f"api-{NEW_HASH}"] = change["replicaset"]
    kube_switch.preflight_refused(
        cluster, ROLLOUTS, backend(cluster, **change.get("argo", {})), message
    )


def test_a_403_names_the_verb_the_resource_and_the_role_rule(
    fresh_db: str, cluster: Cluster, controller: RolloutController
) -> None:
    plan, opts = kube_switch.ready(fresh_db, section(cluster))
    cluster.emulator.forbidden.add(("patch", "rollouts/status"))
    message = kube_switch.forbidden(
        "argo_rollouts", "patch", "rollouts/status", "argoproj.io", "api"
    )
    kube_switch.switch_refused(fresh_db, plan, opts, message, kube_switch.ClusterTime(controller))
    assert status(cluster)["currentStepIndex"] == 1 and controller.acted == []


@pytest.mark.parametrize("steps", kube_switch.BAD_STEPS)
def test_steps_that_are_not_rising_integers_1_to_100_are_refused(steps: str) -> None:
    text = f"release: r\nswitch:\n  argo_rollouts: {{rollout: api}}\n  steps: {steps}\n"
    kube_switch.plan_refused(text, kube_switch.BAD_STEPS_MESSAGE)
