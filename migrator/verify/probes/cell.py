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
    said: set[tuple[int, str]] = field(default_factory=set)

    def add(
        self,
        query: Query,
        check: str,
        severity: Severity,
        reason: str,
        fix: str,
        once: str | None = None,
    ) -> None:
        """A finding of ``query``, unless it has one with the same reason, or one given
        the same ``once`` (what a finding is about: the rows of a 40-row INSERT that each
        meet a constraint are told once, by the first)."""
        if check == "constraint-write" and severity == "warning" and self.version == "new":
            return  # see the module doc: the new version knows its constraints
        found = self.findings.setdefault(id(query), [])
        if any(f.check == check and f.reason == reason for f in found):
            return
        if once is not None:
            if (id(query), once) in self.said:
                return
            self.said.add((id(query), once))
        found.append(query_finding(query, self, check, severity, reason, fix))


__all__ = ["CellProbe"]
