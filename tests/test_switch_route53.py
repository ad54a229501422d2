"""route53 backend with moto: the TTL gate, weighted records by SetIdentifier, INSYNC."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from migrator import commands
from migrator.errors import ExitCode, GateRefused
from migrator.switch import ALL_BLUE, ALL_GREEN, Split, Timing
from migrator.switch.route53 import Route53, Route53Settings
from tests.support.switch_env import ready_release, switch_plan, traffic_events

NAME = "api.example.com."


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.client("route53", region_name="us-east-1")


def _zone(aws: Any, *, ttl: int = 60, green: bool = True) -> str:
    zone = aws.create_hosted_zone(Name="example.com.", CallerReference="t")["HostedZone"]["Id"]
    records = [("blue", "192.0.2.1", 100)] + ([("green", "192.0.2.2", 0)] if green else [])
    aws.change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": NAME,
                        "Type": "A",
                        "SetIdentifier": ident,
                        "Weight": weight,
                        "TTL": ttl,
                        "ResourceRecords": [{"Value": value}],
                    },
                }
                for ident, value, weight in records
            ]
        },
    )
    return str(zone)


def _settings(zone: str, **extra: Any) -> dict[str, Any]:
    return {
        "zone_id": zone,
        "name": NAME,
        "type": "A",
        "max_ttl": 60,
        "blue": {"set_identifier": "blue", "value": "192.0.2.1"},
        "green": {"set_identifier": "green", "value": "192.0.2.2"},
        "region": "us-east-1",
        **extra,
    }


def _weights(aws: Any, zone: str) -> dict[str, tuple[int, int, str]]:
    rrs = aws.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return {
        r["SetIdentifier"]: (r["Weight"], r["TTL"], r["ResourceRecords"][0]["Value"])
        for r in rrs
        if r.get("SetIdentifier")
    }


def test_weighted_steps_move_the_weights_by_set_identifier(aws: Any) -> None:
    zone = _zone(aws)
    backend = Route53(Route53Settings.model_validate(_settings(zone)))
    backend.preflight()
    assert backend.current() == ALL_BLUE
    assert backend.set_split(Split(10)) == Split(10)
    assert _weights(aws, zone) == {"blue": (90, 60, "192.0.2.1"), "green": (10, 60, "192.0.2.2")}
    assert backend.current() == Split(10)
    backend.set_split(ALL_GREEN)
    assert _weights(aws, zone)["blue"][0] == 0 and _weights(aws, zone)["green"][0] == 100
    backend.set_split(ALL_BLUE)
    assert backend.current() == ALL_BLUE


def test_a_missing_green_record_is_created_by_the_first_step(aws: Any) -> None:
    zone = _zone(aws, green=False)
    backend = Route53(Route53Settings.model_validate(_settings(zone)))
    backend.preflight()
    backend.set_split(Split(50))
    assert _weights(aws, zone)["green"] == (50, 60, "192.0.2.2")


def test_preflight_refuses_a_ttl_above_max_ttl_and_says_how_to_lower_it(aws: Any) -> None:
    zone = _zone(aws, ttl=86400)
    backend = Route53(Route53Settings.model_validate(_settings(zone)))
    with pytest.raises(GateRefused) as refused:
        backend.preflight()
    message = str(refused.value)
    assert "TTL 86400s, above max_ttl 60s" in message
    assert "rollback would take that long" in message
    assert "Lower the TTL to 60s first" in message and "wait 86400s" in message
    assert refused.value.exit_code == ExitCode.REFUSED
    assert _weights(aws, zone)["blue"][0] == 100  # nothing moved


def test_preflight_refuses_when_blue_has_no_record(aws: Any) -> None:
    zone = _zone(aws)
    settings = _settings(zone, blue={"set_identifier": "bleu", "value": "192.0.2.1"})
    with pytest.raises(GateRefused, match="SetIdentifier 'bleu'.*found: blue, green"):
        Route53(Route53Settings.model_validate(settings)).preflight()


class _Pending:
    """A client whose changes stay PENDING for `polls` get_change calls."""

    def __init__(self, real: Any, polls: int) -> None:
        self.real, self.polls, self.calls = real, polls, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def change_resource_record_sets(self, **kwargs: Any) -> Any:
        answer = self.real.change_resource_record_sets(**kwargs)
        answer["ChangeInfo"]["Status"] = "PENDING"
        return answer

    def get_change(self, **kwargs: Any) -> Any:
        self.calls += 1
        answer = self.real.get_change(**kwargs)
        answer["ChangeInfo"]["Status"] = "INSYNC" if self.calls >= self.polls else "PENDING"
        return answer


def test_set_split_waits_for_insync(aws: Any) -> None:
    zone = _zone(aws)
    client = _Pending(aws, polls=3)
    now = [0.0]
    timing = Timing(clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    backend = Route53(Route53Settings.model_validate(_settings(zone)), client=client, timing=timing)
    backend.set_split(ALL_GREEN)
    assert client.calls == 3


def test_insync_that_never_comes_is_a_failure(aws: Any) -> None:
    zone = _zone(aws)
    client = _Pending(aws, polls=10**6)
    now = [0.0]
    timing = Timing(clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    settings = Route53Settings.model_validate(_settings(zone, sync_timeout="30s"))
    with pytest.raises(Exception, match="still PENDING after 30.0s"):
        Route53(settings, client=client, timing=timing).set_split(ALL_GREEN)


def test_switch_command_with_route53_records_every_change(aws: Any, fresh_db: str) -> None:
    zone = _zone(aws)
    plan = switch_plan(
        {"route53": _settings(zone), "steps": [5, 100], "watch": {"duration": 0, "interval": 1}}
    )
    opts = ready_release(fresh_db, plan)
    commands.switch(plan, opts)
    assert _weights(aws, zone)["green"][0] == 100
    events = traffic_events(fresh_db, plan.release)
    assert [e["details"]["to"]["green"] for e in events] == [5, 100]
    assert all(e["details"]["backend"] == f"route53 {NAME} A in zone {zone}" for e in events)
