"""AWS Application Load Balancer: one forward action split between two weighted target
groups, on a listener's default action or on a listener rule, through boto3's elbv2.

A split is the two target groups' weights (percent of each, 0-100 of ALB's 0-999);
the rest of the listener's or rule's actions (authentication, say) is kept as it is.
With target group stickiness a client stays on the group it first reached for the
stickiness duration, also across a rollback: stickiness wins over the weights.
boto3 is imported when the backend first talks to AWS, never when a plan is loaded.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from pydantic import Field, model_validator

from migrator.durations import Duration
from migrator.errors import GateRefused
from migrator.strict import Strict
from migrator.switch.base import BackendKind, Split, SwitchFailed

_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
}
_NOT_FOUND = {"ListenerNotFound", "RuleNotFound", "TargetGroupNotFound"}


class AlbTarget(Strict):
    """One side: its target group."""

    target_group_arn: str = Field(pattern=r"^arn:aws[\w-]*:elasticloadbalancing:")


class AlbSettings(Strict):
    """Switch by weighting two target groups in an ALB listener's or rule's forward action."""

    region: str | None = Field(default=None, description="AWS region for the client")
    listener_arn: str | None = Field(
        default=None, description="the listener whose default action forwards (or rule_arn)"
    )
    rule_arn: str | None = Field(
        default=None, description="the listener rule whose action forwards (or listener_arn)"
    )
    blue: AlbTarget
    green: AlbTarget
    stickiness: Duration | None = Field(
        default=None,
        description="target group stickiness: a client stays on the group it reached for "
        "this long (1s-7d); default: the action's stickiness is left as it is",
    )

    @model_validator(mode="after")
    def _check(self) -> AlbSettings:
        if (self.listener_arn is None) == (self.rule_arn is None):
            raise ValueError("alb takes exactly one of listener_arn and rule_arn")
        if self.blue.target_group_arn == self.green.target_group_arn:
            raise ValueError("blue and green name the same target group")
        if self.stickiness is not None and not 1 <= self.stickiness <= 604800:
            raise ValueError("stickiness is 1s to 7d (ALB's limits)")
        return self


def _short(arn: str) -> str:
    """`targetgroup/green/73e2d6bc24d8a067` of an ARN, for messages."""
    return arn.split(":", 5)[-1]


class Alb:
    """The alb backend."""

    name = "alb"

    def __init__(self, settings: AlbSettings, *, client: Any = None) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> Any:
        """The boto3 elbv2 client (credentials from the usual AWS chain)."""
        if self._client is None:
            import boto3

            self._client = boto3.client("elbv2", region_name=self.settings.region)
        return self._client

    @property
    def _what(self) -> str:
        s = self.settings
        return f"listener {s.listener_arn}" if s.listener_arn else f"rule {s.rule_arn}"

    def describe(self) -> str:
        """What this backend drives."""
        return f"alb {self._what}"

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """One elbv2 API call; AWS's refusals become one line naming the call."""
        from botocore.exceptions import BotoCoreError, ClientError

        method = "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
        try:
            return getattr(self.client, method)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "")).split(".")[0]
            message = " ".join(str(error.get("Message", exc)).split())
            if code in _DENIED:
                raise SwitchFailed(
                    f"alb: AWS denied elasticloadbalancing:{operation} ({code}): {message}"
                ) from exc
            if code in _NOT_FOUND:
                what = (
                    f"target group {kwargs['TargetGroupArn']}"
                    if "TargetGroupArn" in kwargs
                    else self._what
                )
                raise GateRefused(
                    f"alb: no {what} in {self.settings.region or 'the default region'} "
                    f"({operation}: {message})",
                    gate="backend-ready",
                ) from exc
            raise SwitchFailed(f"alb: {operation} failed ({code}): {message}") from exc
        except BotoCoreError as exc:
            raise SwitchFailed(f"alb: {operation} failed: {exc}") from exc

    def _actions(self) -> list[dict[str, Any]]:
        s = self.settings
        if s.listener_arn:
            found = self._call("DescribeListeners", ListenerArns=[s.listener_arn])["Listeners"]
            return list(found[0].get("DefaultActions", [])) if found else []
        rules = self._call("DescribeRules", RuleArns=[s.rule_arn])["Rules"]
        return list(rules[0].get("Actions", [])) if rules else []

    def _forward(self, actions: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((a for a in actions if a.get("Type") == "forward"), None)

    @staticmethod
    def _weights(forward: dict[str, Any]) -> dict[str, int]:
        """Target group ARN -> weight of a forward action."""
        groups = forward.get("ForwardConfig", {}).get("TargetGroups")
        if groups:
            return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
        return {forward["TargetGroupArn"]: 1} if forward.get("TargetGroupArn") else {}

    def preflight(self) -> None:
        """The listener or rule exists and forwards to both target groups (no third one
        with a weight); green's target group has a healthy target."""
        s = self.settings
        blue, green = s.blue.target_group_arn, s.green.target_group_arn
        forward = self._forward(self._actions())
        if forward is None:
            raise GateRefused(f"alb: {self._what} has no forward action", gate="backend-ready")
        weights = self._weights(forward)
        missing = [
            f"{c} {_short(a)}" for c, a in (("blue", blue), ("green", green)) if a not in weights
        ]
        if missing:
            raise GateRefused(
                f"alb: {self._what} does not forward to {' nor '.join(missing)}; make its "
                "forward action list both target groups (green at Weight 0) first: the split "
                "is their weights (docs/switch.md, alb)",
                gate="backend-ready",
            )
        others = sorted(_short(a) for a, w in weights.items() if a not in (blue, green) and w)
        if others:
            raise GateRefused(
                f"alb: {self._what} also forwards to {', '.join(others)} with a weight; "
                "its share would not be counted: set it to Weight 0 or remove it",
                gate="backend-ready",
            )
        health = self._call("DescribeTargetHealth", TargetGroupArn=green)
        states = Counter(
            d["TargetHealth"]["State"]
            + (f" ({d['TargetHealth']['Reason']})" if d["TargetHealth"].get("Reason") else "")
            for d in health["TargetHealthDescriptions"]
        )
        if not any(state.startswith("healthy") for state in states):
            seen = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
            raise GateRefused(
                f"alb: green target group {_short(green)} has no healthy target (targets: {seen})",
                gate="backend-ready",
            )

    def current(self) -> Split | None:
        """From the forward action's weights; None if it names neither group."""
        forward = self._forward(self._actions())
        if forward is None:
            return None
        weights = self._weights(forward)
        b = weights.get(self.settings.blue.target_group_arn, 0)
        g = weights.get(self.settings.green.target_group_arn, 0)
        return Split(round(100 * g / (b + g))) if b + g else None

    def set_split(self, split: Split) -> Split:
        """Rewrite the forward action's weights (blue% and green%), keep every other
        action; returns the split read back."""
        s = self.settings
        actions = copy.deepcopy(self._actions())
        forward = self._forward(actions)
        if forward is None:
            raise SwitchFailed(f"alb: {self._what} has no forward action")
        weights = self._weights(forward)
        weights[s.blue.target_group_arn] = split.blue
        weights[s.green.target_group_arn] = split.green
        config: dict[str, Any] = {
            "TargetGroups": [{"TargetGroupArn": a, "Weight": w} for a, w in weights.items()]
        }
        if s.stickiness is not None:
            config["TargetGroupStickinessConfig"] = {
                "Enabled": True,
                "DurationSeconds": int(s.stickiness),
            }
        elif "TargetGroupStickinessConfig" in forward.get("ForwardConfig", {}):
            config["TargetGroupStickinessConfig"] = forward["ForwardConfig"][
                "TargetGroupStickinessConfig"
            ]
        # One target group per action may be named outside ForwardConfig; two may not.
        forward.pop("TargetGroupArn", None)
        forward["ForwardConfig"] = config
        for action in actions:
            oidc = action.get("AuthenticateOidcConfig")
            if oidc is not None and "ClientSecret" not in oidc:
                oidc["UseExistingClientSecret"] = True  # describe never returns the secret
        if s.listener_arn:
            self._call("ModifyListener", ListenerArn=s.listener_arn, DefaultActions=actions)
        else:
            self._call("ModifyRule", RuleArn=s.rule_arn, Actions=actions)
        after = self.current()
        if after != split:
            raise SwitchFailed(f"alb: {self._what} reads {after} after setting {split}")
        return split

    def after_watch(self) -> None:
        """Nothing to retire: blue's target group stays in the action at weight 0."""


BACKEND = BackendKind("alb", AlbSettings, lambda s, timing, observer: Alb(s))

__all__ = ["BACKEND", "Alb", "AlbSettings", "AlbTarget"]
