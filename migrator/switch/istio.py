"""Istio: the weights of a VirtualService http route's two destinations, the blue and
green subsets of one host (networking.istio.io/v1).

The split is the destinations' `weight`s, set to the exact percentages in one merge
patch of `spec.http` (with the VirtualService's resourceVersion, so one changed
meanwhile is not overwritten), and read back. Preflight: the VirtualService exists,
the route (named, else the only one whose destinations are both subsets) sends to
blue and green and nothing else, and a DestinationRule for the host defines both
subsets (a subset it lacks is a 503 from every sidecar).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import Field

from migrator.errors import GateRefused
from migrator.strict import Strict
from migrator.switch.base import BackendKind, Split, SwitchFailed
from migrator.switch.kube import CustomObjects, KubeAccess

GROUP, VERSION = "networking.istio.io", "v1"


class Subset(Strict):
    """A subset of the host, as its DestinationRule names it."""

    subset: str


class IstioSettings(KubeAccess):
    """Switch by weighting the blue and green subsets in an Istio VirtualService route."""

    namespace: str = "default"
    virtual_service: str = Field(description="the VirtualService's name")
    route: str | None = Field(
        default=None,
        description="the `name` of the http route (default: the one route whose "
        "destinations are both subsets)",
    )
    host: str = Field(description="the destination host, as the VirtualService writes it")
    blue: Subset
    green: Subset


class Istio:
    """The istio backend."""

    name = "istio"

    def __init__(self, settings: IstioSettings, *, client: Any = None) -> None:
        self.settings = settings
        self.services = CustomObjects(
            self.name, settings, settings.namespace, GROUP, VERSION, "virtualservices", client
        )
        self.rules = self.services.kind(GROUP, VERSION, "destinationrules")

    def describe(self) -> str:
        """What this backend drives."""
        s = self.settings
        return (
            f"istio virtualservice {s.namespace}/{s.virtual_service} "
            f"({s.host} {s.blue.subset} -> {s.green.subset})"
        )

    def _refuse(self, why: str) -> GateRefused:
        s = self.settings
        return GateRefused(
            f"istio: virtualservice {s.namespace}/{s.virtual_service}: {why}",
            gate="backend-ready",
        )

    def _is(self, dest: dict[str, Any], subset: Subset) -> bool:
        d = dest.get("destination") or {}
        return bool(d.get("host") == self.settings.host and d.get("subset") == subset.subset)

    def _route(self, vs: dict[str, Any]) -> int:
        """The index in spec.http of the route between the subsets; refuse otherwise."""
        s = self.settings
        routes = (vs.get("spec") or {}).get("http") or []

        def both(route: dict[str, Any]) -> bool:
            dests = route.get("route") or []
            return any(self._is(d, s.blue) for d in dests) and any(
                self._is(d, s.green) for d in dests
            )

        named = f"both subsets {s.blue.subset} (blue) and {s.green.subset} (green) of {s.host}"
        if s.route is not None:
            found = [i for i, r in enumerate(routes) if r.get("name") == s.route]
            if not found:
                names = ", ".join(str(r.get("name")) for r in routes if r.get("name"))
                raise self._refuse(f"no http route named {s.route} (named: {names or 'none'})")
            index = found[0]
            if not both(routes[index]):
                raise self._refuse(f"http route {s.route} does not send to {named}")
        else:
            candidates = [i for i, r in enumerate(routes) if both(r)]
            if len(candidates) != 1:
                raise self._refuse(
                    f"no http route sends to {named}"
                    if not candidates
                    else f"http routes {', '.join(map(str, candidates))} all send to {named}; "
                    "say which with istio.route"
                )
            index = candidates[0]
        others = [
            f"{(d.get('destination') or {}).get('host')}/{(d.get('destination') or {}).get('subset')}"
            for d in routes[index].get("route") or []
            if not (self._is(d, s.blue) or self._is(d, s.green))
        ]
        if others:
            raise self._refuse(
                f"http route {index} also sends to {', '.join(others)}; migrator sets exact "
                "percentages only between blue and green"
            )
        return index

    def preflight(self) -> None:
        """The VirtualService and its route exist; a DestinationRule defines both subsets."""
        s = self.settings
        self._route(self.services.get(s.virtual_service))
        rules = [r for r in self.rules.list() if (r.get("spec") or {}).get("host") == s.host]
        if not rules:
            raise GateRefused(
                f"istio: no DestinationRule in namespace {s.namespace} for host {s.host}; it "
                f"must define the subsets {s.blue.subset} and {s.green.subset}",
                gate="backend-ready",
            )
        defined = {
            sub.get("name") for r in rules for sub in (r.get("spec") or {}).get("subsets") or []
        }
        missing = [x.subset for x in (s.blue, s.green) if x.subset not in defined]
        if missing:
            names = ", ".join(str(r.get("metadata", {}).get("name")) for r in rules)
            raise GateRefused(
                f"istio: destinationrule {names} for host {s.host} defines no subset "
                f"{' or '.join(missing)} (it defines: {', '.join(sorted(map(str, defined))) or 'none'})",
                gate="backend-ready",
            )

    def current(self) -> Split | None:
        """green weight / (blue + green weight); None if both are 0."""
        vs = self.services.get(self.settings.virtual_service)
        dests = vs["spec"]["http"][self._route(vs)].get("route") or []
        # One destination takes all traffic without a weight; with several, Istio wants
        # them all weighted.
        default = 100 if len(dests) == 1 else 0
        blue = sum(int(d.get("weight", default)) for d in dests if self._is(d, self.settings.blue))
        green = sum(
            int(d.get("weight", default)) for d in dests if self._is(d, self.settings.green)
        )
        if blue + green == 0:
            return None
        return Split(round(100 * green / (blue + green)))

    def set_split(self, split: Split) -> Split:
        """Both weights in one merge patch of spec.http; the split read back."""
        s = self.settings
        vs = self.services.get(s.virtual_service)
        index = self._route(vs)
        http = copy.deepcopy(vs["spec"]["http"])
        for dest in http[index].get("route") or []:
            dest["weight"] = split.green if self._is(dest, s.green) else split.blue
        body: dict[str, Any] = {"spec": {"http": http}}
        version = (vs.get("metadata") or {}).get("resourceVersion")
        if version:
            # Changed since it was read: refused with 409, not overwritten.
            body["metadata"] = {"resourceVersion": version}
        self.services.patch(s.virtual_service, body)
        after = self.current()
        if after != split:
            raise SwitchFailed(
                f"istio: virtualservice {s.namespace}/{s.virtual_service} reads {after} after "
                f"the patch to {split}"
            )
        return after

    def after_watch(self) -> None:
        """Nothing to retire: blue's destination stays at weight 0 as the rollback target."""


BACKEND = BackendKind("istio", IstioSettings, lambda s, timing, observer: Istio(s))
