"""The plan's ``switch:`` section: one traffic backend, the steps, smoke tests, the watch.

The backends' keys and models come from the switch registry, so a backend is declared in
its own module only; the plan model takes `SwitchSettings` from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, create_model, field_validator, model_validator

from migrator.durations import Duration
from migrator.strict import Strict
from migrator.switch.registry import REGISTRY as SWITCH_REGISTRY


class HttpProbe(Strict):
    """An HTTP check: status, and optionally latency."""

    url: str
    expect_status: int = 200
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 2.0
    retries: int = Field(default=0, ge=0)
    max_latency: Duration | None = None


class PrometheusProbe(Strict):
    """A Prometheus instant query compared with a threshold."""

    url: str
    query: str
    max: float | None = None
    min: float | None = None


class Probe(Strict):
    """One probe: exactly one of ``http`` or ``prometheus``."""

    http: HttpProbe | None = None
    prometheus: PrometheusProbe | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Probe:
        if (self.http is None) == (self.prometheus is None):
            raise ValueError("a probe takes exactly one of http, prometheus")
        return self


class Watch(Strict):
    """``watch:``: probes after each traffic step; a failure moves traffic back."""

    duration: Duration = 600.0
    interval: Duration = 15.0
    probes: list[Probe] = Field(default_factory=list)


# -- the switch: the backends' keys come from the switch registry -------------------------


class _SwitchCommon(Strict):
    """What every switch section has besides its one backend."""

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(default_factory=lambda: [100])
    smoke: list[Probe] = Field(default_factory=list)
    watch: Watch = Field(default_factory=Watch)

    @model_validator(mode="after")
    def _one_backend(self) -> _SwitchCommon:
        backends = [b for b in SWITCH_REGISTRY if getattr(self, b) is not None]
        if len(backends) != 1:
            raise ValueError(
                f"switch takes exactly one backend of {', '.join(SWITCH_REGISTRY)}"
                + (f"; got {', '.join(backends)}" if backends else "")
            )
        error = SWITCH_REGISTRY[backends[0]].steps_error(self.backend, self.steps)
        if error:
            raise ValueError(error)
        return self

    @field_validator("steps")
    @classmethod
    def _steps_rise_to_100(cls, steps: list[int]) -> list[int]:
        if (
            not steps
            or steps[-1] != 100
            or any(a >= b for a, b in zip(steps, steps[1:], strict=False))
        ):
            raise ValueError("steps must rise strictly and end at 100, e.g. [1, 5, 25, 50, 100]")
        return steps

    @property
    def backend_name(self) -> str:
        """The one backend this plan uses."""
        return next(b for b in SWITCH_REGISTRY if getattr(self, b) is not None)

    @property
    def backend(self) -> Any:
        """The settings of that backend (its model from the registry)."""
        return getattr(self, self.backend_name)


if TYPE_CHECKING:
    SwitchSettings = _SwitchCommon
else:
    SwitchSettings = create_model(
        "SwitchSettings",
        __base__=_SwitchCommon,
        __doc__="``switch:``: exactly one traffic backend, the steps, smoke tests and the watch.",
        **{
            name: (kind.settings | None, Field(default=None, description=kind.settings.__doc__))
            for name, kind in SWITCH_REGISTRY.items()
        },
    )
