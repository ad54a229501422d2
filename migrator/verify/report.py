"""What `migrator check` found, and the machine formats it is written in.

A `CheckReport` holds the matrix cells (a version's queries at one phase), every finding
(query findings and lint findings alike, one `migrator.findings.Finding` type), and
renders itself as JSON data, JUnit XML (one test case per query and cell, and per lint
finding) and GitHub workflow annotations, with the writers lint uses too. The human
table is drawn by the CLI, the only layer that imports rich.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from migrator.findings import (
    CHECK,
    Finding,
    Severity,
    finding_json,
    github_annotation,
    github_data,
    github_property,
    junit_case,
    junit_document,
    suite_counts,
)

if TYPE_CHECKING:
    from migrator.verify.queries import Query


class CellFacts(Protocol):
    """What a finding takes from the cell it was found in."""

    @property
    def version_label(self) -> str: ...
    @property
    def phase(self) -> str: ...
    @property
    def must_pass(self) -> bool: ...


def query_finding(
    query: Query, cell: CellFacts, check: str, severity: Severity, reason: str, fix: str
) -> Finding:
    """A finding on one query of one cell; an error in an informational cell is told as
    info (such cells never fail the check)."""
    if not cell.must_pass and severity == "error":
        severity = "info"
    return Finding(
        check=check,
        severity=severity,
        reason=reason,
        fix=fix,
        file=query.file,
        line=query.line,
        query=query.name,
        version=cell.version_label,
        phase=cell.phase,
        must_pass=cell.must_pass,
        sql=query.text,
    )


@dataclass
class QueryResult:
    """One query in one cell: checked, and the findings it got there."""

    name: str
    file: str
    line: int
    findings: list[Finding] = field(default_factory=list)
    note: str | None = None  # e.g. "not preparable: parsed only"

    @property
    def status(self) -> str:
        """pass | warning | fail (errors; in an informational cell, its info findings)."""
        severities = {f.severity for f in self.findings}
        if "error" in severities or "info" in severities:
            return "fail"
        if "warning" in severities:
            return "warning"
        return "pass"


@dataclass
class Cell:
    """A version's queries at one phase. ``must_pass`` cells decide the exit code."""

    version: str  # old | new
    version_name: str
    phase: str
    must_pass: bool
    results: list[QueryResult] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``old (v1)@expanded``."""
        return f"{self.version} ({self.version_name})@{self.phase}"

    @property
    def failures(self) -> int:
        """Queries that fail here (informational cells: that would fail)."""
        return sum(1 for r in self.results if r.status == "fail")


@dataclass
class CheckReport:
    """Everything one run of check found."""

    release: str
    plan_hash: str
    plan_file: str
    before_source: str
    server_version: int
    cells: list[Cell] = field(default_factory=list)
    lint: list[Finding] = field(default_factory=list)
    lint_available: bool = True  # False when the lint was skipped (--no-lint)
    problems: list[Finding] = field(default_factory=list)  # query-set and plan-level
    seconds: float = 0.0
    queries: dict[str, int] = field(default_factory=dict)  # version -> count
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @property
    def findings(self) -> list[Finding]:
        """Every finding: plan-level, lint, then each cell's."""
        out = list(self.problems) + list(self.lint)
        for cell in self.cells:
            for result in cell.results:
                out += result.findings
        return out

    @property
    def failed(self) -> bool:
        """True when an error stands in a must-pass cell, in the lint or the query sets."""
        return any(f.severity == "error" and f.must_pass for f in self.findings)

    def counts(self) -> dict[str, int]:
        """Findings by severity (informational cells counted apart)."""
        counts = {"error": 0, "warning": 0, "info": 0}
        for f in self.findings:
            counts[f.severity] += 1
        return counts

    # -- JSON ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain data for --format json."""
        return {
            "release": self.release,
            "plan_hash": self.plan_hash,
            "plan_file": self.plan_file,
            "before": self.before_source,
            "server_version": self.server_version,
            "passed": not self.failed,
            "counts": self.counts(),
            "queries": self.queries,
            "seconds": round(self.seconds, 3),
            "timings": self.timings,
            "lint_available": self.lint_available,
            "cells": [
                {
                    "version": c.version,
                    "version_name": c.version_name,
                    "phase": c.phase,
                    "must_pass": c.must_pass,
                    "queries": len(c.results),
                    "failures": c.failures,
                }
                for c in self.cells
            ],
            "findings": [finding_json(f, CHECK) for f in self.findings],
        }

    # -- JUnit --------------------------------------------------------------------------

    def to_junit(self) -> str:
        """JUnit XML: a suite per cell with a case per query, and a suite of lint findings.

        Findings in informational cells are reported as skipped cases with the reason, so
        CI shows them without failing the build.
        """
        root = ET.Element("testsuites", name=f"migrator check {self.release}")
        total = failures = skipped = 0
        for cell in self.cells:
            suite = ET.SubElement(root, "testsuite", name=f"check {cell.label}")
            s_fail = s_skip = 0
            for result in cell.results:
                case = ET.SubElement(
                    suite,
                    "testcase",
                    name=f"{result.name} [{cell.label}]",
                    classname=f"migrator.check.{cell.version}.{cell.phase}",
                    file=result.file,
                    line=str(result.line),
                )
                # In an informational cell what would be an error is reported as info.
                errors = [f for f in result.findings if f.severity in ("error", "info")]
                others = [f for f in result.findings if f.severity == "warning"]
                if errors and cell.must_pass:
                    failure = ET.SubElement(
                        case, "failure", message=errors[0].reason, type=errors[0].check
                    )
                    failure.text = "\n".join(f.summary() for f in errors)
                    s_fail += 1
                elif errors:
                    ET.SubElement(
                        case, "skipped", message=f"informational cell: {errors[0].reason}"
                    )
                    s_skip += 1
                if others or result.note:
                    out = ET.SubElement(case, "system-out")
                    out.text = "\n".join(
                        [f"{f.severity}: {f.summary()}" for f in others]
                        + ([result.note] if result.note else [])
                    )
            suite_counts(suite, len(cell.results), s_fail, s_skip)
            total += len(cell.results)
            failures += s_fail
            skipped += s_skip
        extra = self.problems + self.lint
        if extra:
            suite = ET.SubElement(root, "testsuite", name="lint and query sets")
            s_fail = 0
            for f in extra:
                failing = f.severity == "error"
                junit_case(suite, f, CHECK, self.plan_file, failing)
                s_fail += failing
            suite_counts(suite, len(extra), s_fail, 0)
            total += len(extra)
            failures += s_fail
        suite_counts(root, total, failures, skipped)
        root.set("time", f"{self.seconds:.3f}")
        return junit_document(root)

    # -- GitHub -------------------------------------------------------------------------

    def to_github(self) -> list[str]:
        """GitHub workflow commands: one ``::error``/``::warning``/``::notice`` per finding."""
        return [
            github_annotation(f, CHECK, self.plan_file, f.severity == "error" and f.must_pass)
            for f in self.findings
        ]


__all__ = [
    "Cell",
    "CheckReport",
    "Finding",
    "QueryResult",
    "Severity",
    "github_data",
    "github_property",
    "suite_counts",
]
