"""Route53: weighted record sets, one per colour, told apart by SetIdentifier.

A DNS switch is only as fast as the record's TTL: resolvers keep the old answer that
long, so with a 24-hour TTL a rollback takes 24 hours. The preflight therefore refuses
a TTL above `max_ttl` and says how to lower it first.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from migrator.durations import Duration
from migrator.errors import GateRefused
from migrator.strict import Strict
from migrator.switch.base import REAL_TIME, BackendKind, Split, SwitchFailed, Timing


class Route53Target(Strict):
    """One weighted record set."""

    set_identifier: str
    value: str


class Route53Settings(Strict):
    """Switch by weighting Route53 record sets."""

    zone_id: str
    name: str
    type: str = "A"
    max_ttl: int = Field(default=60, ge=0)
    blue: Route53Target
    green: Route53Target
    region: str | None = Field(default=None, description="AWS region for the client")
    sync_timeout: Duration = Field(default=300.0, description="how long to wait for INSYNC")


def _aws_errors() -> tuple[type[Exception], ...]:
    """botocore's failures, imported only when the backend talks to AWS."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


class Route53:
    """The route53 backend."""

    name = "route53"

    def __init__(
        self, settings: Route53Settings, *, client: Any = None, timing: Timing = REAL_TIME
    ) -> None:
        self.settings = settings
        self.timing = timing
        self._client = client

    @property
    def client(self) -> Any:
        """The boto3 Route53 client (credentials from the usual AWS chain)."""
        if self._client is None:
            import boto3

            self._client = boto3.client("route53", region_name=self.settings.region)
        return self._client

    def describe(self) -> str:
        """What this backend drives."""
        s = self.settings
        return f"route53 {s.name} {s.type} in zone {s.zone_id}"

    def _records(self) -> dict[str, dict[str, Any]]:
        """SetIdentifier -> record set, for this name and type."""
        s = self.settings
        found: dict[str, dict[str, Any]] = {}
        try:
            kwargs: dict[str, Any] = {
                "HostedZoneId": s.zone_id,
                "StartRecordName": _fqdn(s.name),
                "StartRecordType": s.type,
            }
            while True:
                page = self.client.list_resource_record_sets(**kwargs)
                for rr in page["ResourceRecordSets"]:
                    if _fqdn(rr["Name"]) != _fqdn(s.name) or rr["Type"] != s.type:
                        return found
                    found[rr.get("SetIdentifier", "")] = rr
                if not page.get("IsTruncated"):
                    return found
                kwargs["StartRecordName"] = page["NextRecordName"]
                kwargs["StartRecordType"] = page["NextRecordType"]
                if page.get("NextRecordIdentifier"):
                    kwargs["StartRecordIdentifier"] = page["NextRecordIdentifier"]
        except _aws_errors() as exc:
            raise SwitchFailed(f"route53: cannot list {s.name} in {s.zone_id}: {exc}") from exc

    def preflight(self) -> None:
        """Blue's record exists; no record of this name has a TTL above max_ttl."""
        s = self.settings
        records = self._records()
        if s.blue.set_identifier not in records:
            known = ", ".join(sorted(k or "(not weighted)" for k in records)) or "none"
            raise GateRefused(
                f"route53: no {s.type} record {_fqdn(s.name)} with SetIdentifier "
                f"{s.blue.set_identifier!r} in zone {s.zone_id} (found: {known})",
                gate="backend-ready",
            )
        for ident, rr in records.items():
            ttl = int(rr.get("TTL", 0))
            if ttl > s.max_ttl:
                raise GateRefused(
                    f"route53: {_fqdn(s.name)} {s.type} ({ident or 'not weighted'}) has TTL "
                    f"{ttl}s, above max_ttl {s.max_ttl}s: resolvers would keep the old answer "
                    f"for up to {ttl}s, so a rollback would take that long. Lower the TTL "
                    f"to {s.max_ttl}s first (UPSERT the record with TTL {s.max_ttl}), wait "
                    f"{ttl}s for the old TTL to expire, then switch",
                    gate="dns-ttl",
                )

    def current(self) -> Split | None:
        """green weight / (blue + green weight); None if the records are not weighted."""
        records = self._records()
        blue = records.get(self.settings.blue.set_identifier)
        green = records.get(self.settings.green.set_identifier)
        if blue is None or "Weight" not in blue:
            return None
        wb = int(blue["Weight"])
        wg = int(green["Weight"]) if green is not None and "Weight" in green else 0
        if wb + wg == 0:
            return Split(50)  # Route53 answers evenly when every weight is 0
        return Split(round(100 * wg / (wb + wg)))

    def _change(self, target: Route53Target, weight: int, ttl: int) -> dict[str, Any]:
        s = self.settings
        return {
            "Action": "UPSERT",
            "ResourceRecordSet": {
                "Name": _fqdn(s.name),
                "Type": s.type,
                "SetIdentifier": target.set_identifier,
                "Weight": weight,
                "TTL": ttl,
                "ResourceRecords": [{"Value": target.value}],
            },
        }

    def set_split(self, split: Split) -> Split:
        """UPSERT both weighted records in one change batch; wait for INSYNC."""
        s = self.settings
        records = self._records()
        blue = records.get(s.blue.set_identifier, {})
        ttl = min(int(blue.get("TTL", s.max_ttl)), s.max_ttl)
        batch = {
            "Comment": f"migrator switch: {split}",
            "Changes": [
                self._change(s.blue, split.blue, ttl),
                self._change(s.green, split.green, ttl),
            ],
        }
        try:
            answer = self.client.change_resource_record_sets(
                HostedZoneId=s.zone_id, ChangeBatch=batch
            )
            self._wait_insync(answer["ChangeInfo"]["Id"], answer["ChangeInfo"]["Status"])
        except _aws_errors() as exc:
            raise SwitchFailed(f"route53: change of {_fqdn(s.name)} failed: {exc}") from exc
        return split

    def _wait_insync(self, change_id: str, status: str) -> None:
        deadline = self.timing.clock() + self.settings.sync_timeout
        delay = 1.0
        while status != "INSYNC":
            if self.timing.clock() >= deadline:
                raise SwitchFailed(
                    f"route53: change {change_id} still {status} after "
                    f"{self.settings.sync_timeout}s"
                )
            self.timing.sleep(delay)
            delay = min(delay * 2, 10.0)
            status = self.client.get_change(Id=change_id)["ChangeInfo"]["Status"]

    def after_watch(self) -> None:
        """Nothing to retire: blue's record stays at weight 0 as the rollback target."""


BACKEND = BackendKind(
    "route53", Route53Settings, lambda s, timing, observer: Route53(s, timing=timing)
)
