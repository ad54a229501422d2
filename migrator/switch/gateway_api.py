"""Gateway API: the weights of an HTTPRoute's two backendRefs (gateway.networking.k8s.io/v1).

One rule of the route sends to both Services, blue and green; the split is their
`weight`s, set to the exact percentages in one merge patch of `spec.rules` (with the
route's resourceVersion, so a route changed meanwhile is not overwritten), and the
current split is read back from the route. Preflight: the route exists, the rule
names both Services and nothing else, and every Gateway in `status.parents` has
Accepted and ResolvedRefs true.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import Field

from migrator.errors import GateRefused
from migrator.strict import Strict
from migrator.switch.base import BackendKind, Split, SwitchFailed
from migrator.switch.kube import CustomObjects, KubeAccess

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"


class ServicePort(Strict):
    """A Service the route sends to, and its port (default: any port the ref names)."""

    service: str
    port: int | None = Field(default=None, ge=1, le=65535)


class GatewayApiSettings(KubeAccess):
    """Switch by weighting the blue and green backendRefs of a Gateway API HTTPRoute."""

    namespace: str = "default"
    route: str = Field(description="the HTTPRoute's name")
    rule: int | None = Field(
        default=None,
        ge=0,
        description="index of the rule in spec.rules (default: the one rule whose "
        "backendRefs name both services)",
    )
    blue: ServicePort
    green: ServicePort


def _is(ref: dict[str, Any], target: ServicePort) -> bool:
    """Whether a backendRef points at the target Service (and port, if given)."""
    return (
        ref.get("kind", "Service") == "Service"
        and ref.get("group", "") in ("", "core")
        and ref.get("name") == target.service
        and (target.port is None or ref.get("port") == target.port)
    )


def _true(conditions: list[dict[str, Any]], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


class GatewayApi:
    """The gateway_api backend."""

    name = "gateway_api"

    def __init__(self, settings: GatewayApiSettings, *, client: Any = None) -> None:
        self.settings = settings
        self.routes = CustomObjects(
            self.name, settings, settings.namespace, GROUP, VERSION, PLURAL, client
        )

    def describe(self) -> str:
        """What this backend drives."""
        s = self.settings
        return (
            f"gateway_api httproute {s.namespace}/{s.route} ({s.blue.service} -> {s.green.service})"
        )

    def _refuse(self, why: str) -> GateRefused:
        s = self.settings
        return GateRefused(
            f"gateway_api: httproute {s.namespace}/{s.route}: {why}", gate="backend-ready"
        )

    def _rule(self, route: dict[str, Any]) -> int:
        """The index of the rule that splits between blue and green; refuse otherwise."""
        s = self.settings
        rules = (route.get("spec") or {}).get("rules") or []
        both = [
            i
            for i, rule in enumerate(rules)
            if any(_is(r, s.blue) for r in rule.get("backendRefs") or [])
            and any(_is(r, s.green) for r in rule.get("backendRefs") or [])
        ]
        named = f"both {s.blue.service} (blue) and {s.green.service} (green)"
        if s.rule is not None:
            if s.rule >= len(rules):
                raise self._refuse(f"has {len(rules)} rule(s); there is no rule {s.rule}")
            if s.rule not in both:
                refs = [r.get("name") for r in rules[s.rule].get("backendRefs") or []]
                raise self._refuse(
                    f"rule {s.rule} does not send to {named}"
                    + (" with their ports" if s.blue.port or s.green.port else "")
                    + f" (its backendRefs: {', '.join(map(str, refs)) or 'none'})"
                )
            index = s.rule
        elif len(both) != 1:
            raise self._refuse(
                f"no rule sends to {named}"
                if not both
                else f"rules {', '.join(map(str, both))} all send to {named}; "
                "say which with gateway_api.rule"
            )
        else:
            index = both[0]
        others = [
            r.get("name")
            for r in rules[index].get("backendRefs") or []
            if not (_is(r, s.blue) or _is(r, s.green))
        ]
        if others:
            raise self._refuse(
                f"rule {index} also sends to {', '.join(map(str, others))}; migrator sets "
                "exact percentages only between blue and green"
            )
        return index

    def preflight(self) -> None:
        """The route exists, its rule names both Services, every parent accepted it."""
        route = self.routes.get(self.settings.route)
        self._rule(route)
        parents = (route.get("status") or {}).get("parents") or []
        if not parents:
            raise self._refuse("no Gateway has accepted it yet (status.parents is empty)")
        for parent in parents:
            conditions = parent.get("conditions") or []
            ref = parent.get("parentRef") or {}
            gateway = f"{ref.get('namespace', self.settings.namespace)}/{ref.get('name')}"
            for kind in ("Accepted", "ResolvedRefs"):
                if not _true(conditions, kind):
                    found = next((c for c in conditions if c.get("type") == kind), None)
                    detail = (
                        f"{found.get('status')}: {found.get('reason')}: {found.get('message')}"
                        if found
                        else "absent"
                    )
                    raise self._refuse(f"parent {gateway}: condition {kind} is {detail}")

    def _weights(self, route: dict[str, Any]) -> tuple[int, int]:
        s = self.settings
        refs = route["spec"]["rules"][self._rule(route)].get("backendRefs") or []
        # Gateway API's default weight is 1.
        blue = sum(int(r.get("weight", 1)) for r in refs if _is(r, s.blue))
        green = sum(int(r.get("weight", 1)) for r in refs if _is(r, s.green))
        return blue, green

    def current(self) -> Split | None:
        """green weight / (blue + green weight); None if both are 0 (nothing served)."""
        blue, green = self._weights(self.routes.get(self.settings.route))
        if blue + green == 0:
            return None
        return Split(round(100 * green / (blue + green)))

    def set_split(self, split: Split) -> Split:
        """Both weights in one merge patch of spec.rules; the split read back."""
        s = self.settings
        route = self.routes.get(s.route)
        index = self._rule(route)
        rules = copy.deepcopy(route["spec"]["rules"])
        for ref in rules[index].get("backendRefs") or []:
            ref["weight"] = split.green if _is(ref, s.green) else split.blue
        body: dict[str, Any] = {"spec": {"rules": rules}}
        version = (route.get("metadata") or {}).get("resourceVersion")
        if version:
            # A route changed since it was read is refused with 409, not overwritten.
            body["metadata"] = {"resourceVersion": version}
        self.routes.patch(s.route, body)
        after = self.current()
        if after != split:
            raise SwitchFailed(
                f"gateway_api: httproute {s.namespace}/{s.route} reads {after} after the "
                f"patch to {split}"
            )
        return after

    def after_watch(self) -> None:
        """Nothing to retire: blue's backendRef stays at weight 0 as the rollback target."""


BACKEND = BackendKind("gateway_api", GatewayApiSettings, lambda s, timing, observer: GatewayApi(s))
