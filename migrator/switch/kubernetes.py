"""Kubernetes: switch a Service's selector between the blue and green Deployments.

All-or-nothing steps (the usual `[100]`) patch the Service selector from
``{key: blue}`` to ``{key: green}``: instant, and instant back.

Weighted steps without a traffic router are done the way Argo Rollouts does a canary
without one: the Service selects both versions by labels they share
(`shared_selector`, e.g. ``{app: api}``), and the split is set by replica counts
(green = ceil(N * percent / 100), blue = N - green, N being blue's replica count when
the switch began). The split is therefore only as fine as 1/N, and `current()` reports
the split the available replicas really give. Green is scaled up and ready before
blue is scaled down, so capacity never drops. Each Deployment's replica count before
migrator touched it is kept in an annotation, so a later run (or the rollback) can
restore it: the cluster, not migrator, holds the state.

After the watch, `blue_after_switch: keep` leaves blue at its original size (an instant
rollback target); `zero` scales it to 0 but keeps the Deployment, so a rollback scales
it back up, waits for it, and only then moves the selector.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import Field

from migrator.durations import Duration
from migrator.errors import GateRefused
from migrator.observer import NULL_OBSERVER, Observer
from migrator.strict import Strict
from migrator.switch.base import (
    ALL_BLUE,
    ALL_GREEN,
    REAL_TIME,
    BackendKind,
    Split,
    SwitchFailed,
    Timing,
)
from migrator.switch.kube import KubeAccess, api_client

ORIGINAL_REPLICAS = "migrator.io/original-replicas"

T = TypeVar("T")


class KubernetesSelector(Strict):
    """The service selector label and its blue and green values."""

    key: str
    blue: str
    green: str


class BlueDeployment(Strict):
    """The blue (old) deployment."""

    deployment: str


class GreenDeployment(Strict):
    """The green (new) deployment, and the image to roll out to it."""

    deployment: str
    image: str | None = None
    container: str | None = Field(
        default=None, description="the container whose image is set (default: the first)"
    )


class KubernetesSettings(KubeAccess):
    """Switch by patching a Service's selector (weighted steps by replica counts)."""

    namespace: str = "default"
    service: str
    selector: KubernetesSelector
    blue: BlueDeployment
    green: GreenDeployment
    blue_after_switch: Literal["keep", "zero"] = "keep"
    shared_selector: dict[str, str] = Field(
        default_factory=dict,
        description="labels both versions carry (e.g. {app: api}); needed for weighted steps, "
        "which select both deployments and set the split by replica counts",
    )
    rollout_timeout: Duration = Field(
        default=600.0, description="how long to wait for a deployment rollout"
    )


def _steps_error(settings: KubernetesSettings, steps: list[int]) -> str | None:
    if steps != [100] and not settings.shared_selector:
        return (
            "weighted steps on kubernetes need kubernetes.shared_selector (labels both "
            "versions carry, e.g. {app: api}): the split is set by replica counts"
        )
    return None


class Kubernetes:
    """The kubernetes backend."""

    name = "kubernetes"

    def __init__(
        self,
        settings: KubernetesSettings,
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
        self._client = client
        self._core: Any = None
        self._apps: Any = None

    # -- plumbing ------------------------------------------------------------------------

    def _apis(self) -> tuple[Any, Any]:
        if self._core is None:
            from kubernetes import client

            api = self._client if self._client is not None else api_client(self.settings)
            self._core, self._apps = client.CoreV1Api(api), client.AppsV1Api(api)
        return self._core, self._apps

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the API; turn its failures into one line naming what was asked."""
        from kubernetes.client import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise GateRefused(
                    f"kubernetes: {what}: not found in namespace {self.settings.namespace}",
                    gate="backend-ready",
                ) from exc
            raise SwitchFailed(f"kubernetes: {what}: {exc.status} {exc.reason}") from exc
        except GateRefused:
            raise
        except Exception as exc:  # urllib3 connection errors and the like
            raise SwitchFailed(f"kubernetes: {what}: {type(exc).__name__}: {exc}") from exc

    def _service(self) -> Any:
        core, _ = self._apis()
        s = self.settings
        return self._call(
            f"read service {s.service}", core.read_namespaced_service, s.service, s.namespace
        )

    def _deployment(self, name: str) -> Any:
        _, apps = self._apis()
        return self._call(
            f"read deployment {name}",
            apps.read_namespaced_deployment,
            name,
            self.settings.namespace,
        )

    def _patch_deployment(self, name: str, body: dict[str, Any]) -> Any:
        _, apps = self._apis()
        return self._call(
            f"patch deployment {name}",
            apps.patch_namespaced_deployment,
            name,
            self.settings.namespace,
            body,
        )

    def _patch_selector(self, selector: dict[str, str | None]) -> None:
        core, _ = self._apis()
        s = self.settings
        self._call(
            f"patch service {s.service}",
            core.patch_namespaced_service,
            s.service,
            s.namespace,
            {"spec": {"selector": selector}},
        )

    def describe(self) -> str:
        """What this backend drives."""
        s = self.settings
        return (
            f"kubernetes service {s.namespace}/{s.service} "
            f"({s.blue.deployment} -> {s.green.deployment})"
        )

    # -- state ---------------------------------------------------------------------------

    def _selector_state(self, selector: dict[str, str]) -> str | None:
        """blue, green, shared (both selected: weighted), or None (not a state of ours)."""
        s = self.settings
        value = selector.get(s.selector.key)
        if value == s.selector.blue:
            return "blue"
        if value == s.selector.green:
            return "green"
        if (
            value is None
            and s.shared_selector
            and all(selector.get(k) == v for k, v in s.shared_selector.items())
        ):
            return "shared"
        return None

    @staticmethod
    def _replicas(dep: Any) -> int:
        return 1 if dep.spec.replicas is None else int(dep.spec.replicas)

    @staticmethod
    def _available(dep: Any) -> int:
        return int((dep.status and dep.status.available_replicas) or 0)

    def _original(self, dep: Any) -> int:
        notes = dep.metadata.annotations or {}
        value = notes.get(ORIGINAL_REPLICAS)
        return int(value) if value is not None else self._replicas(dep)

    @staticmethod
    def rollout_state(dep: Any) -> tuple[bool, str]:
        """(finished, why not) for a Deployment, as `kubectl rollout status` decides."""
        status = dep.status
        desired = Kubernetes._replicas(dep)
        generation = dep.metadata.generation or 0
        if status is None or (status.observed_generation or 0) < generation:
            return False, "the controller has not observed the latest spec yet"
        for cond in status.conditions or []:
            if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
                raise SwitchFailed(
                    f"kubernetes: deployment {dep.metadata.name} exceeded its progress "
                    f"deadline: {cond.message or 'no message'}"
                )
        updated = int(status.updated_replicas or 0)
        available = int(status.available_replicas or 0)
        total = int(status.replicas or 0)
        if updated < desired:
            return False, f"{updated} of {desired} replicas updated"
        if total > updated:
            return False, f"{total - updated} old replicas pending termination"
        if available < updated:
            return False, f"{available} of {updated} updated replicas available"
        return True, ""

    def wait_rollout(self, name: str) -> Any:
        """Wait until the Deployment's rollout is finished; the Deployment."""
        deadline = self.timing.clock() + self.settings.rollout_timeout
        while True:
            dep = self._deployment(name)
            done, why = self.rollout_state(dep)
            if done:
                return dep
            if self.timing.clock() >= deadline:
                raise SwitchFailed(
                    f"kubernetes: rollout of deployment {name} not finished after "
                    f"{self.settings.rollout_timeout}s: {why}"
                )
            self.timing.sleep(self.poll)

    def _scale(self, dep: Any, replicas: int, *, wait: bool) -> Any:
        """Scale a Deployment, remembering its size before migrator first touched it."""
        name = dep.metadata.name
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if ORIGINAL_REPLICAS not in (dep.metadata.annotations or {}):
            body["metadata"] = {"annotations": {ORIGINAL_REPLICAS: str(self._replicas(dep))}}
        if replicas != self._replicas(dep) or "metadata" in body:
            self.observer.info(f"kubernetes: scale {name} to {replicas}")
            dep = self._patch_deployment(name, body)
        return self.wait_rollout(name) if wait else dep

    # -- the protocol --------------------------------------------------------------------

    def preflight(self) -> None:
        """The service selects blue (or a state migrator left), both Deployments exist,
        green's image is rolled out and its rollout is finished."""
        s = self.settings
        service = self._service()
        selector = dict(service.spec.selector or {}) if service.spec else {}
        if self._selector_state(selector) is None:
            raise GateRefused(
                f"kubernetes: service {s.namespace}/{s.service} selects {selector or '{}'}; "
                f"expected {s.selector.key}: {s.selector.blue} (blue)",
                gate="backend-ready",
            )
        self._deployment(s.blue.deployment)
        green = self._deployment(s.green.deployment)
        if s.green.image is not None and self._set_image(green, s.green.image):
            green = self.wait_rollout(s.green.deployment)
        elif not self.rollout_state(green)[0]:
            green = self.wait_rollout(s.green.deployment)
        if self._replicas(green) == 0:
            raise GateRefused(
                f"kubernetes: deployment {s.green.deployment} has 0 replicas; scale it up "
                "before the switch",
                gate="backend-ready",
            )

    def _set_image(self, dep: Any, image: str) -> bool:
        """Set green's image; True if it changed (a rollout to wait for)."""
        containers = dep.spec.template.spec.containers or []
        wanted = self.settings.green.container
        chosen = next((c for c in containers if wanted in (None, c.name)), None)
        if chosen is None:
            raise GateRefused(
                f"kubernetes: deployment {dep.metadata.name} has no container "
                f"{wanted or '(none at all)'}",
                gate="backend-ready",
            )
        if chosen.image == image:
            return False
        self.observer.info(f"kubernetes: set image of {dep.metadata.name}/{chosen.name}: {image}")
        # Strategic merge patch: containers are merged by name, the others are untouched.
        self._patch_deployment(
            dep.metadata.name,
            {
                "spec": {
                    "template": {"spec": {"containers": [{"name": chosen.name, "image": image}]}}
                }
            },
        )
        return True

    def current(self) -> Split | None:
        """From the selector; in the weighted state, from the available replicas."""
        s = self.settings
        state = self._selector_state(dict(self._service().spec.selector or {}))
        if state == "blue":
            return ALL_BLUE
        if state == "green":
            return ALL_GREEN
        if state is None:
            return None
        blue = self._deployment(s.blue.deployment)
        green = self._deployment(s.green.deployment)
        b, g = self._available(blue), self._available(green)
        if b + g == 0:
            b, g = self._replicas(blue), self._replicas(green)
        return Split(round(100 * g / (b + g))) if b + g else None

    def set_split(self, split: Split) -> Split:
        """Patch the selector (0% / 100%), or set replica counts (weighted)."""
        if split.green == 0:
            return self._to_blue()
        if split.green == 100:
            return self._to_green()
        return self._weighted(split)

    def _to_blue(self) -> Split:
        s = self.settings
        blue = self._deployment(s.blue.deployment)
        original = self._original(blue)
        if self._available(blue) == 0:
            # Blue was zeroed: it must be up before it gets traffic.
            self._scale(blue, original, wait=True)
            self._patch_selector(self._selector("blue"))
        else:
            # Traffic first (seconds), capacity after: this is the rollback path.
            self._patch_selector(self._selector("blue"))
            if self._replicas(blue) < original:
                self._scale(blue, original, wait=True)
        return ALL_BLUE

    def _to_green(self) -> Split:
        s = self.settings
        green = self._deployment(s.green.deployment)
        original = self._original(green)
        if self._replicas(green) < original or self._available(green) < original:
            self._scale(green, original, wait=True)
        self._patch_selector(self._selector("green"))
        return ALL_GREEN

    def _weighted(self, split: Split) -> Split:
        s = self.settings
        blue = self._deployment(s.blue.deployment)
        green = self._deployment(s.green.deployment)
        total = max(self._original(blue), 1)
        g = min(max(1, math.ceil(total * split.green / 100)), total)
        b = max(1, total - g)
        # Green first, and ready, before both are selected and before blue shrinks.
        self._scale(green, g, wait=True)
        self._patch_selector(self._selector("shared"))
        self._scale(blue, b, wait=True)
        effective = Split(round(100 * g / (g + b)))
        if effective != split:
            self.observer.warning(
                f"kubernetes: {split.green}% asked, {effective.green}% given "
                f"({g} green and {b} blue replicas of {total})"
            )
        return effective

    def _selector(self, state: str) -> dict[str, str | None]:
        s = self.settings
        if state == "shared":
            return {**s.shared_selector, s.selector.key: None}  # None removes the key
        value = s.selector.blue if state == "blue" else s.selector.green
        return {**s.shared_selector, s.selector.key: value}

    def after_watch(self) -> None:
        """blue_after_switch: keep (blue back at its original size) or zero (0 replicas)."""
        s = self.settings
        blue = self._deployment(s.blue.deployment)
        if s.blue_after_switch == "zero":
            self._scale(blue, 0, wait=False)
        elif self._replicas(blue) < self._original(blue):
            self._scale(blue, self._original(blue), wait=False)


BACKEND = BackendKind(
    "kubernetes",
    KubernetesSettings,
    lambda s, timing, observer: Kubernetes(s, timing=timing, observer=observer),
    _steps_error,
)
