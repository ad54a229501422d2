"""A Kubernetes API for the switch tests and bench: the kmock emulator on a loopback port,
in its own thread, spoken to over HTTP by the official client.

kmock keeps objects but runs no controllers, so this plays two parts of a real
cluster: the API server bumps metadata.generation when a Deployment's spec changes
(a kmock subclass), and a controller thread writes each Deployment's status through
the API, as the deployment controller would, some polls later.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import kmock
from kmock._internal import apps as kmock_apps
from kubernetes import client as k8s

NS = "prod"
CONTROLLER_AGENT = "test-deployment-controller"
DEPLOYMENTS = "apps/v1/deployments"


class Passes:
    """A controller's passes over its objects, counted, so that a test can wait for the
    event it needs, the controller having caught up (a whole pass that began after the
    test asked and found nothing to do), instead of for some time."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._begun = 0  # passes begun
        self._idle = 0  # the number of the last pass that found nothing to do

    def begin(self) -> None:
        with self._changed:
            self._begun += 1

    def done(self, *, idle: bool) -> None:
        with self._changed:
            if idle:
                self._idle = self._begun
            self._changed.notify_all()

    def settled(self, timeout: float = 30.0) -> None:
        with self._changed:
            # A pass under way may have read the objects before the caller changed them:
            # only one begun after now counts.
            after = self._begun
            caught_up = self._changed.wait_for(lambda: self._idle > after, timeout)
        assert caught_up, f"the controller did not catch up in {timeout}s"


VERBS = {"FETCH": "get", "LIST": "list", "WATCH": "watch", "CREATE": "create", "DELETE": "delete"}


class ApiServer(kmock.KubernetesEmulator):
    """kmock, plus what the real API server does on a spec change (generation + 1) and
    RBAC's answer to a request no rule allows (403, for the (verb, resource) pairs in
    `forbidden`; resource as RBAC writes it, e.g. ``httproutes`` or ``rollouts/status``)."""

    forbidden: set[tuple[str, str]]
    client_count: int  # requests from anyone but the test's controllers

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.forbidden = set()
        self.client_count = 0

    async def _handle(self, request: Any) -> Any:
        if request.headers.get("User-Agent") != CONTROLLER_AGENT:
            self.client_count += 1
        # kmock matches every request against all the requests it kept (O(n) a request,
        # O(n^2) a test): a controller polling every 10ms made a test crawl. Keep the last.
        del self._requests[:-16]
        if request.resource is not None and request.action is not None:
            verb = VERBS.get(request.action.name) or (
                "update" if str(request.method.value).upper() == "PUT" else "patch"
            )
            resource = request.resource.plural + (
                f"/{request.subresource}" if request.subresource else ""
            )
            if (verb, resource) in self.forbidden:
                group = request.resource.group or "core"
                raise kmock.KubernetesError(
                    status=403,
                    reason="Forbidden",
                    message=f'{resource}.{group} "{request.name}" is forbidden: User '
                    f'"system:serviceaccount:{NS}:migrator" cannot {verb} resource '
                    f'"{resource}" in API group "{request.resource.group}" in the '
                    f'namespace "{request.namespace}"',
                )
        return await super()._handle(request)

    async def _serve_update(self, request: Any) -> Any:
        if (
            request.subresource is None
            and isinstance(request.data, dict)
            and "spec" in request.data
        ):
            obj = self.objects[request.resource, request.namespace, request.name]
            generation = int(obj.get("metadata", {}).get("generation", 1))
            obj.patch({"metadata": {"generation": generation + 1}})
        return await super()._serve_update(request)


class Cluster:
    """kmock on a loopback port in its own thread, and a deployment controller."""

    def __init__(
        self,
        tmp: Path,
        *,
        blue_replicas: int = 4,
        green_replicas: int = 4,
        controller: bool = True,
    ) -> None:
        self._ready = threading.Event()
        self._box: dict[str, Any] = {}
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        self.url: str = self._box["url"]
        self.emulator = emulator = self._box["kmock"]
        emulator.objects["v1/services", NS, "api"] = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "api", "namespace": NS},
            "spec": {"selector": {"app": "api", "version": "blue"}},
        }
        for colour, replicas in (("blue", blue_replicas), ("green", green_replicas)):
            emulator.objects[DEPLOYMENTS, NS, f"api-{colour}"] = _deployment(colour, replicas)
        self.kubeconfig = tmp / "kubeconfig"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
            f"clusters: [{{name: kmock, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: tester, user: {}}]\n"
            "contexts: [{name: test, context: {cluster: kmock, user: tester}}]\n"
        )
        cfg = k8s.Configuration()
        cfg.host = self.url
        self.api = k8s.ApiClient(cfg)
        self.core, self.apps = k8s.CoreV1Api(self.api), k8s.AppsV1Api(self.api)
        # The controller has its own client, told apart by its User-Agent.
        self._controller_api = k8s.ApiClient(cfg)
        self._controller_api.user_agent = CONTROLLER_AGENT
        self._controller_apps = k8s.AppsV1Api(self._controller_api)
        self.poll = 0.01  # seconds between the controller's looks
        self.bad_images: set[str] = set()
        self.lag = 3  # polls before the controller reacts to a new generation
        self.custom = k8s.CustomObjectsApi(self.api)
        self._stop = threading.Event()
        self.passes = Passes()
        self._controller = threading.Thread(target=self._control, daemon=True)
        if controller:  # the custom-object backends need no deployment controller
            self._controller.start()

    async def _serve(self) -> None:
        async with ApiServer() as emulator, kmock_apps.Server(emulator) as server:
            self._box.update(kmock=emulator, url=str(server.url).rstrip("/"))
            self._box["stop"] = stop = asyncio.Event()
            self._box["loop"] = asyncio.get_running_loop()
            self._ready.set()
            await stop.wait()

    def _control(self) -> None:
        """The deployment controller: status follows spec after `lag` polls."""
        seen: dict[str, int] = {}
        while not self._stop.is_set():
            self.passes.begin()
            idle = True
            for name in ("api-blue", "api-green"):
                try:
                    dep = self._controller_apps.read_namespaced_deployment(name, NS)
                except Exception:
                    continue
                generation = dep.metadata.generation or 1
                if dep.status and dep.status.observed_generation == generation:
                    continue
                idle = False
                seen[name] = seen.get(name, 0) + 1
                if seen[name] < self.lag:
                    continue
                seen[name] = 0
                self._controller_apps.patch_namespaced_deployment_status(
                    name, NS, {"status": _status(dep, generation, self.bad_images)}
                )
            self.passes.done(idle=idle)
            self._stop.wait(self.poll)

    def settled(self) -> None:
        """Returns once the deployment controller (if it runs) has caught up."""
        if self._controller.is_alive():
            self.passes.settled()

    def selector(self) -> dict[str, str]:
        return dict(self.core.read_namespaced_service("api", NS).spec.selector)

    def deployment(self, name: str) -> Any:
        return self.apps.read_namespaced_deployment(name, NS)

    def replicas(self) -> tuple[int, int]:
        return (
            self.deployment("api-blue").spec.replicas,
            self.deployment("api-green").spec.replicas,
        )

    def stop(self) -> None:
        self._stop.set()
        if self._controller.is_alive():
            self._controller.join(5)
        self._box["loop"].call_soon_threadsafe(self._box["stop"].set)
        self._thread.join(10)
        self.api.close()
        self._controller_api.close()

    def client_requests(self) -> int:
        """How many requests reached the API from anyone but the controller."""
        count: int = self.emulator.client_count
        return count


def _deployment(colour: str, replicas: int) -> dict[str, Any]:
    labels = {"app": "api", "version": colour}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"api-{colour}", "namespace": NS, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "api", "image": f"registry.test/api:{colour}"}]},
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        },
    }


def _status(dep: Any, generation: int, bad_images: set[str]) -> dict[str, Any]:
    replicas = dep.spec.replicas if dep.spec.replicas is not None else 1
    image = dep.spec.template.spec.containers[0].image
    if image in bad_images:
        return {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": 0,
            "availableReplicas": 0,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": f'ReplicaSet has timed out progressing (image "{image}")',
                }
            ],
        }
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
        ],
    }


# -- Argo Rollouts ---------------------------------------------------------------------------

ROLLOUTS = "argoproj.io/v1alpha1/rollouts"
REPLICASETS = "apps/v1/replicasets"
OLD_HASH, NEW_HASH = "6f9c7d5b8", "7d4b9c6f5"


def rollout(strategy: str, *, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Rollout whose template was just changed (new pod hash), as its controller leaves
    it at the first pause: a canary paused at its first pause step, a blueGreen at its
    pre-promotion pause."""
    status: dict[str, Any] = {
        "phase": "Paused",
        "message": "CanaryPauseStep" if strategy == "canary" else "BlueGreenPause",
        "stableRS": OLD_HASH,
        "currentPodHash": NEW_HASH,
        "pauseConditions": [
            {
                "reason": "CanaryPauseStep" if strategy == "canary" else "BlueGreenPause",
                "startTime": "2026-12-05T12:00:00Z",
            }
        ],
        "controllerPause": True,
    }
    spec_strategy: dict[str, Any]
    if strategy == "canary":
        steps = steps or []
        first_pause = next(i for i, s in enumerate(steps) if "pause" in s)
        status["currentStepIndex"] = first_pause
        spec_strategy = {"canary": {"steps": steps}}
    else:
        status["blueGreen"] = {"activeSelector": OLD_HASH, "previewSelector": NEW_HASH}
        spec_strategy = {
            "blueGreen": {
                "activeService": "api-active",
                "previewService": "api-preview",
                "autoPromotionEnabled": False,
            }
        }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "api", "namespace": NS, "generation": 2},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "api"}},
            "strategy": spec_strategy,
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": []}},
        },
        "status": status,
    }


def replicaset(pod_hash: str, replicas: int, available: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": f"api-{pod_hash}", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "api", "rollouts-pod-template-hash": pod_hash}},
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": []}},
        },
        "status": {"replicas": replicas, "availableReplicas": available},
    }


class RolloutController:
    """Plays the Argo Rollouts controller for one Rollout, through the API, some polls
    after each change: a canary runs its steps from `currentStepIndex` to the next pause
    step (or to the end, where the new pod hash becomes stable); a promoted blueGreen
    switches its active selector; an abort puts the stable version back (canary index 0,
    blueGreen active = stable) and marks the Rollout Degraded, as Argo does."""

    def __init__(self, cluster: Cluster, *, lag: int = 3) -> None:
        self.api = k8s.CustomObjectsApi(cluster._controller_api)
        self.lag = lag
        self.poll = 0.01
        self.acted: list[str] = []  # what the controller did, in order
        self.passes = Passes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _get(self) -> dict[str, Any]:
        found: dict[str, Any] = self.api.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", NS, "rollouts", "api"
        )
        return found

    def _status(self, status: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object_status(
            "argoproj.io", "v1alpha1", NS, "rollouts", "api", {"status": status}
        )

    def _next(self, ro: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """What the controller would do now, or None."""
        spec, status = ro["spec"], ro.get("status") or {}
        paused = bool(status.get("pauseConditions") or spec.get("paused"))
        done = status.get("stableRS") == status.get("currentPodHash")
        if status.get("abort"):
            if status.get("phase") == "Degraded":
                return None
            aborted = {"phase": "Degraded", "message": "RolloutAborted", "pauseConditions": None}
            if "canary" in spec["strategy"]:
                return "abort", {**aborted, "currentStepIndex": 0}
            active = {"activeSelector": status["stableRS"]}
            return "abort", {**aborted, "blueGreen": {**status["blueGreen"], **active}}
        if paused or done:
            return None
        if "blueGreen" in spec["strategy"]:
            bg = {**status["blueGreen"], "activeSelector": status["currentPodHash"]}
            return "promote", {
                "blueGreen": bg,
                "stableRS": status["currentPodHash"],
                "phase": "Healthy",
                "message": None,
                "controllerPause": None,
            }
        steps = spec["strategy"]["canary"]["steps"]
        index = int(status.get("currentStepIndex") or 0)
        if index < len(steps) and "pause" in steps[index]:
            index += 1  # unpaused at a pause step: promoted past it
        while index < len(steps) and "pause" not in steps[index]:
            index += 1  # setWeight steps take effect at once here (no traffic router)
        if index >= len(steps):
            return "complete", {
                "currentStepIndex": len(steps),
                "stableRS": status["currentPodHash"],
                "phase": "Healthy",
                "message": None,
            }
        pause = [{"reason": "CanaryPauseStep", "startTime": "2026-12-05T12:00:00Z"}]
        return f"pause at {index}", {
            "currentStepIndex": index,
            "pauseConditions": pause,
            "phase": "Paused",
            "message": "CanaryPauseStep",
        }

    def _run(self) -> None:
        waited = 0
        while not self._stop.is_set():
            self.passes.begin()
            try:
                action = self._next(self._get())
            except Exception:
                action = None
            if action is None:
                waited = 0
            else:
                waited += 1
                if waited >= self.lag:
                    waited = 0
                    self.acted.append(action[0])
                    self._status(action[1])
            self.passes.done(idle=action is None)
            self._stop.wait(self.poll)

    def settled(self) -> None:
        """Returns once the controller has caught up: the Rollout is as it leaves it."""
        self.passes.settled()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
