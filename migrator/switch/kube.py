"""What every backend that talks to a Kubernetes API shares: where the cluster is (the
`kubeconfig`/`context` keys), the ApiClient, and one way to call it that turns a
failure into one line: 404 and 403 are refusals (the object is missing; the Role
lacks a rule, and the line says which), the rest runtime failures.

The kubernetes client is imported inside the functions, never at the top, so the
backends' settings models load without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import Field

from migrator.errors import GateRefused
from migrator.strict import Strict
from migrator.switch.base import SwitchFailed

T = TypeVar("T")


class KubeAccess(Strict):
    """Where the cluster is; the keys every Kubernetes backend takes."""

    context: str | None = Field(default=None, description="kubeconfig context to use")
    kubeconfig: str | None = Field(
        default=None, description="kubeconfig file (default: in-cluster, else ~/.kube/config)"
    )


def api_client(settings: KubeAccess, backend: str = "kubernetes") -> Any:
    """An ApiClient from the plan's kubeconfig, else in-cluster, else ~/.kube/config."""
    from kubernetes import client, config

    if settings.kubeconfig is None:
        try:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return client.ApiClient(cfg)
        except config.ConfigException:
            pass  # not in a pod: fall back to the user's kubeconfig
    try:
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=settings.kubeconfig, context=settings.context
        )
    except (config.ConfigException, OSError) as exc:
        raise SwitchFailed(f"{backend}: cannot load the kubeconfig: {exc}") from exc


@dataclass(frozen=True)
class Access:
    """One API request as RBAC sees it: verb, API group, resource, object name."""

    verb: str
    group: str
    resource: str
    name: str

    def __str__(self) -> str:
        kind = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {kind} {self.name}".rstrip()

    def rule(self) -> str:
        """The Role rule that allows it, as it is written in rbac.yaml."""
        # A list names no object, and RBAC cannot narrow it by name.
        names = f'resourceNames: ["{self.name}"], ' if self.verb != "list" else ""
        return (
            f'{{apiGroups: ["{self.group}"], resources: ["{self.resource}"], '
            f'{names}verbs: ["{self.verb}"]}}'
        )


def call(
    backend: str, namespace: str, access: Access, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Call the API; turn its failures into one line naming the request."""
    from kubernetes.client import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            raise GateRefused(
                f"{backend}: {access}: not found in namespace {namespace}", gate="backend-ready"
            ) from exc
        if exc.status == 403:
            raise GateRefused(
                f"{backend}: {access} in namespace {namespace}: forbidden (HTTP 403); the "
                f"Role of migrator's service account needs the rule {access.rule()} "
                "(deploy/kubernetes/rbac.yaml)",
                gate="backend-ready",
            ) from exc
        raise SwitchFailed(f"{backend}: {access}: {exc.status} {exc.reason}") from exc
    except GateRefused:
        raise
    except Exception as exc:  # urllib3 connection errors and the like
        raise SwitchFailed(f"{backend}: {access}: {type(exc).__name__}: {exc}") from exc


class CustomObjects:
    """get / list / patch of one kind of custom object in one namespace."""

    def __init__(
        self,
        backend: str,
        settings: KubeAccess,
        namespace: str,
        group: str,
        version: str,
        plural: str,
        client: Any = None,
    ) -> None:
        """`client`: an ApiClient, or a function that gives one (shared with another kind)."""
        self.backend = backend
        self.settings = settings
        self.namespace = namespace
        self.group, self.version, self.plural = group, version, plural
        self._client = client
        self._api: Any = None

    def client(self) -> Any:
        """The ApiClient on the plan's cluster (built on first use)."""
        if self._client is None:
            self._client = api_client(self.settings, self.backend)
        elif callable(self._client):
            self._client = self._client()
        return self._client

    def api(self) -> Any:
        """CustomObjectsApi on that client."""
        if self._api is None:
            from kubernetes import client

            self._api = client.CustomObjectsApi(self.client())
        return self._api

    def kind(self, group: str, version: str, plural: str) -> CustomObjects:
        """Another kind in the same namespace, on the same client."""
        return CustomObjects(
            self.backend, self.settings, self.namespace, group, version, plural, self.client
        )

    def get(self, name: str) -> dict[str, Any]:
        """The object, as plain data."""
        found: dict[str, Any] = call(
            self.backend,
            self.namespace,
            Access("get", self.group, self.plural, name),
            self.api().get_namespaced_custom_object,
            self.group,
            self.version,
            self.namespace,
            self.plural,
            name,
        )
        return found

    def list(self) -> list[dict[str, Any]]:
        """Every object of the kind in the namespace."""
        found = call(
            self.backend,
            self.namespace,
            Access("list", self.group, self.plural, ""),
            self.api().list_namespaced_custom_object,
            self.group,
            self.version,
            self.namespace,
            self.plural,
        )
        return list(found.get("items") or [])

    def patch(self, name: str, body: dict[str, Any], *, status: bool = False) -> dict[str, Any]:
        """A JSON merge patch (lists are replaced whole) of the object or its status."""
        api = self.api()
        fn = (
            api.patch_namespaced_custom_object_status
            if status
            else api.patch_namespaced_custom_object
        )
        resource = f"{self.plural}/status" if status else self.plural
        patched: dict[str, Any] = call(
            self.backend,
            self.namespace,
            Access("patch", self.group, resource, name),
            fn,
            self.group,
            self.version,
            self.namespace,
            self.plural,
            name,
            body,
        )
        return patched
