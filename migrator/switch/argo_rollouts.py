"""Argo Rollouts: drive an existing Rollout (argoproj.io/v1alpha1) instead of moving
traffic itself; the Rollout's controller moves it.

A canary Rollout moves by its own `setWeight` steps: each migrator step promotes the
Rollout to its next pause, and the split is read from the Rollout's status (its
traffic router's weight where it reports one, else the last setWeight at or before
`status.currentStepIndex`). A blueGreen Rollout is promoted once, from its
pre-promotion pause (`autoPromotionEnabled: false`). Going back to blue is an abort.
The patches are the ones `kubectl argo rollouts promote` and `abort` send: merge
patches of `status` (the status subresource) and of `spec.paused`.

Preflight: the Rollout exists, is Paused where migrator expects (a canary pause step,
blueGreen's pre-promotion pause, or already promoted), and its new ReplicaSet is
available. End a canary's steps with `setWeight: 100` and `pause: {}`: at that pause
all traffic is on green and an abort still puts it back; `after_watch` then promotes
the Rollout to the end.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from migrator.durations import Duration
from migrator.errors import GateRefused
from migrator.observer import NULL_OBSERVER, Observer
from migrator.switch.base import (
    ALL_BLUE,
    REAL_TIME,
    BackendKind,
    Split,
    SwitchFailed,
    Timing,
)
from migrator.switch.kube import Access, CustomObjects, KubeAccess, call

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"


class ArgoRolloutsSettings(KubeAccess):
    """Switch by promoting (and aborting) an Argo Rollout, canary or blueGreen."""

    namespace: str = "default"
    rollout: str = Field(description="the Rollout's name")
    timeout: Duration = Field(
        default=600.0,
        description="how long the controller may take to reach the Rollout's next pause "
        "after a promote, or blue after an abort",
    )


class ArgoRollouts:
    """The argo_rollouts backend."""

    name = "argo_rollouts"

    def __init__(
        self,
        settings: ArgoRolloutsSettings,
        *,
        client: Any = None,
        timing: Timing = REAL_TIME,
        observer: Observer = NULL_OBSERVER,
        poll: float = 0.5,
    ) -> None:
        self.settings = settings
        self.timing = timing
        self.observer = observer
        self.poll = poll
        self.rollouts = CustomObjects(
            self.name, settings, settings.namespace, GROUP, VERSION, PLURAL, client
        )

    def describe(self) -> str:
        """What this backend drives."""
        return f"argo rollout {self.settings.namespace}/{self.settings.rollout}"

    # -- reading the Rollout ------------------------------------------------------------

    def _get(self) -> dict[str, Any]:
        return self.rollouts.get(self.settings.rollout)

    @staticmethod
    def _strategy(ro: dict[str, Any]) -> str:
        strategy = (ro.get("spec") or {}).get("strategy") or {}
        return "blueGreen" if "blueGreen" in strategy else "canary"

    @staticmethod
    def _steps(ro: dict[str, Any]) -> list[dict[str, Any]]:
        canary = ((ro.get("spec") or {}).get("strategy") or {}).get("canary") or {}
        return list(canary.get("steps") or [])

    @staticmethod
    def _index(ro: dict[str, Any]) -> int:
        return int((ro.get("status") or {}).get("currentStepIndex") or 0)

    @staticmethod
    def _pauses(ro: dict[str, Any]) -> list[str]:
        return [str(p.get("reason")) for p in (ro.get("status") or {}).get("pauseConditions") or []]

    def _paused(self, ro: dict[str, Any]) -> bool:
        return bool(self._pauses(ro) or (ro.get("spec") or {}).get("paused"))

    @staticmethod
    def _promoted(ro: dict[str, Any]) -> bool:
        """The new version is the stable one: the Rollout is done."""
        status = ro.get("status") or {}
        return bool(status.get("stableRS")) and status.get("stableRS") == status.get(
            "currentPodHash"
        )

    def _weight(self, ro: dict[str, Any]) -> int:
        """The percent of traffic on the new version, from the Rollout's status."""
        status = ro.get("status") or {}
        if self._strategy(ro) == "blueGreen":
            active = (status.get("blueGreen") or {}).get("activeSelector")
            return 100 if active and active == status.get("currentPodHash") else 0
        if self._promoted(ro):
            return 100
        if status.get("abort"):
            return 0
        routed = ((status.get("canary") or {}).get("weights") or {}).get("canary") or {}
        if "weight" in routed:
            return int(routed["weight"])
        steps = self._steps(ro)
        for step in reversed(steps[: self._index(ro) + 1]):
            if "setWeight" in step:
                return int(step["setWeight"])
        return 0

    def _where(self, ro: dict[str, Any]) -> str:
        status = ro.get("status") or {}
        step = (
            f", step {self._index(ro)} of {len(self._steps(ro))}"
            if self._strategy(ro) == "canary"
            else ""
        )
        message = f": {status['message']}" if status.get("message") else ""
        return f"phase {status.get('phase', 'unknown')}{step}{message}"

    def _refuse(self, why: str) -> GateRefused:
        s = self.settings
        return GateRefused(
            f"argo_rollouts: rollout {s.namespace}/{s.rollout} {why}", gate="backend-ready"
        )

    # -- the protocol -------------------------------------------------------------------

    def preflight(self) -> None:
        """The Rollout exists, is paused where migrator promotes from, and its new
        ReplicaSet is available."""
        ro = self._get()
        status = ro.get("status") or {}
        if status.get("abort"):
            raise self._refuse(
                f"is aborted ({self._where(ro)}); retry it (kubectl argo rollouts retry) "
                "before the switch"
            )
        if not self._promoted(ro):
            if self._strategy(ro) == "blueGreen":
                if "BlueGreenPause" not in self._pauses(ro) and self._weight(ro) < 100:
                    raise self._refuse(
                        f"has not reached its pre-promotion pause ({self._where(ro)}); "
                        "migrator promotes a blueGreen Rollout with autoPromotionEnabled: false "
                        "from that pause"
                    )
            elif not self._paused(ro):
                raise self._refuse(
                    f"is not paused ({self._where(ro)}); migrator promotes a canary from "
                    "one of its pause steps: wait until it reaches the next"
                )
        self._new_replicaset_available(ro)

    def _new_replicaset_available(self, ro: dict[str, Any]) -> None:
        from kubernetes import client

        s = self.settings
        pod_hash = (ro.get("status") or {}).get("currentPodHash")
        if not pod_hash:
            raise self._refuse(f"has no new ReplicaSet yet ({self._where(ro)})")
        name = f"{s.rollout}-{pod_hash}"
        apps = client.AppsV1Api(self.rollouts.client())
        rs = call(
            self.name,
            s.namespace,
            Access("get", "apps", "replicasets", name),
            apps.read_namespaced_replica_set,
            name,
            s.namespace,
        )
        wanted = 1 if rs.spec.replicas is None else int(rs.spec.replicas)
        available = int((rs.status and rs.status.available_replicas) or 0)
        if available < wanted:
            raise self._refuse(
                f"has its new ReplicaSet {name} at {available} of {wanted} replicas available"
            )

    def current(self) -> Split | None:
        """The new version's share, from the Rollout's status."""
        return Split(self._weight(self._get()))

    def set_split(self, split: Split) -> Split:
        """Abort for 0%; else promote to the Rollout's next pause until its weight is at
        least the step's (blueGreen: promote once, to 100%)."""
        if split.green == 0:
            return self._abort()
        ro = self._get()
        if self._strategy(ro) == "blueGreen" and split.green < 100:
            raise self._refuse(
                f"is blueGreen: it moves all traffic at once, so it takes no {split.green}% "
                "step; give the plan steps: [100]"
            )
        while self._weight(ro) < split.green:
            if self._promoted(ro):
                break
            ro = self._promote(ro)
        after = Split(self._weight(ro))
        if after != split:
            self.observer.warning(
                f"argo_rollouts: {split.green}% asked, the Rollout's steps give {after.green}%"
            )
        return after

    def _promote(self, ro: dict[str, Any]) -> dict[str, Any]:
        """What `kubectl argo rollouts promote` does, then wait for the controller to
        pause again further on (or finish)."""
        s = self.settings
        index = self._index(ro)
        canary = self._strategy(ro) == "canary"
        if self._pauses(ro):
            self.rollouts.patch(s.rollout, {"status": {"pauseConditions": None}}, status=True)
        elif canary:
            # No pause condition (e.g. paused by spec): step on, as the plugin does.
            step = min(index + 1, len(self._steps(ro)))
            self.rollouts.patch(
                s.rollout,
                {"status": {"pauseConditions": None, "currentStepIndex": step}},
                status=True,
            )
        if (ro.get("spec") or {}).get("paused"):
            self.rollouts.patch(s.rollout, {"spec": {"paused": False}})
        self.observer.info(f"argo_rollouts: promoted {s.rollout} ({self._where(ro)})")

        def moved(now: dict[str, Any]) -> bool:
            if self._promoted(now):
                return True
            if canary:
                return self._index(now) > index and self._paused(now)
            return self._weight(now) == 100

        return self._wait(moved, "reach its next pause after the promote")

    def _abort(self) -> Split:
        """What `kubectl argo rollouts abort` does; wait until blue has it all."""
        s = self.settings
        ro = self._get()
        if self._weight(ro) == 0:
            return ALL_BLUE
        if self._promoted(ro):
            raise SwitchFailed(
                f"argo_rollouts: rollout {s.namespace}/{s.rollout} is fully promoted (its "
                "stable ReplicaSet is the new one): an abort cannot move traffic back; roll "
                f"back with `kubectl argo rollouts undo {s.rollout} -n {s.namespace}`"
            )
        self.rollouts.patch(s.rollout, {"status": {"abort": True}}, status=True)
        self._wait(lambda now: self._weight(now) == 0, "put all traffic back on the stable version")
        return ALL_BLUE

    def _wait(self, done: Any, what: str) -> dict[str, Any]:
        s = self.settings
        deadline = self.timing.clock() + s.timeout
        while True:
            ro = self._get()
            if done(ro):
                return ro
            if (ro.get("status") or {}).get("phase") == "Degraded" and not (
                ro.get("status") or {}
            ).get("abort"):
                raise SwitchFailed(
                    f"argo_rollouts: rollout {s.namespace}/{s.rollout} is degraded ({self._where(ro)})"
                )
            if self.timing.clock() >= deadline:
                raise SwitchFailed(
                    f"argo_rollouts: rollout {s.namespace}/{s.rollout} did not {what} within "
                    f"{s.timeout:g}s ({self._where(ro)})"
                )
            self.timing.sleep(self.poll)

    def after_watch(self) -> None:
        """All traffic on green and watched: promote a canary to its end, so the new
        version becomes its stable one (a promoted blueGreen Rollout is there already)."""
        ro = self._get()
        while self._strategy(ro) == "canary" and not self._promoted(ro):
            ro = self._promote(ro)


BACKEND = BackendKind(
    "argo_rollouts",
    ArgoRolloutsSettings,
    lambda s, timing, observer: ArgoRollouts(s, timing=timing, observer=observer),
)
