"""One cell of the matrix as the probes see it, and the findings they add to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from migrator.verify.queries import Query
from migrator.verify.report import Finding, Severity, query_finding
from migrator.verify.snapshot import Snapshot


@dataclass
class CellProbe:
    """One cell's view for the probes: its version, phase, and the phase it is compared
    with (the one before, whose constraints the version already met), if any."""

    version: Literal["old", "new"]
    version_label: str
    phase: str
    must_pass: bool
    snapshot: Snapshot
    before: Snapshot  # the schema before the release
    previous: Snapshot | None  # old@expanded: before; new@contracted: expanded
    findings: dict[int, list[Finding]] = field(default_factory=dict)

    def add(self, query: Query, check: str, severity: Severity, reason: str, fix: str) -> None:
        if check == "constraint-write" and severity == "warning" and self.version == "new":
            return  # see the module doc: the new version knows its constraints
        found = self.findings.setdefault(id(query), [])
        if any(f.check == check and f.reason == reason for f in found):
            return
        found.append(query_finding(query, self, check, severity, reason, fix))


__all__ = ["CellProbe"]
