"""The traffic backends by the name a plan gives them under ``switch:``.

The one list of backend names: the plan's switch model, its JSON Schema and
`make_backend` are all generated from it. A backend is one module (its settings model,
its code, and a `BACKEND` kind) plus its line here. Modules listed here import no
client library at import time, so `migrator plan validate` stays light.
"""

from __future__ import annotations

from typing import Any

from migrator.switch import (
    alb,
    argo_rollouts,
    command,
    gateway_api,
    haproxy,
    istio,
    kubernetes,
    nginx,
    route53,
)
from migrator.switch.base import BackendKind

REGISTRY: dict[str, BackendKind[Any]] = {
    kind.name: kind
    for kind in (
        kubernetes.BACKEND,
        nginx.BACKEND,
        route53.BACKEND,
        command.BACKEND,
        gateway_api.BACKEND,
        istio.BACKEND,
        argo_rollouts.BACKEND,
        haproxy.BACKEND,
        alb.BACKEND,
    )
}

__all__ = ["REGISTRY"]
