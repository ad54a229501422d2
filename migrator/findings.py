"""What lint and check report: one `Finding` type, and the machine formats it is written in.

A finding is one problem at one place: a lint rule broken by a statement (``check`` is
``"lint"``, ``rule`` its id), or a query that fails at a phase (``check`` names the
check, ``version``/``phase`` the cell). `finding_json`, `junit_case` and
`github_annotation` are the one writer of each format for both commands; a `Voice` holds
the few words in which each command has always written them (CI set-ups match on those
words), so neither command's output changed when the two writers became one. This is a
bottom module: it imports nothing of migrator.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]


@dataclass
class Finding:
    """One problem: what, where, for which version at which phase, why, and the fix.

    ``reason`` and ``fix`` are the lint's message and safe form (also readable under
    those names). ``operation`` names the plan operation a lint finding comes from
    (``expand[2].create_index``); ``suppressed`` holds the plan's written reason when a
    lint finding is suppressed (such findings are only returned when asked for).
    """

    check: str  # lint | prepare | syntax | insert-not-null | unsynced-write | select-star | ...
    severity: Severity
    reason: str
    fix: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    query: str | None = None
    version: str | None = None  # "old (v1)" / "new (v2)"
    phase: str | None = None
    must_pass: bool = True
    sql: str | None = None
    rule: str | None = None  # lint rule id
    operation: str | None = None
    suppressed: str | None = None

    @property
    def message(self) -> str:
        """The reason, as the lint calls it."""
        return self.reason

    @property
    def safe_form(self) -> str:
        """The fix, as the lint calls it (the rule's safe form)."""
        return self.fix

    @property
    def position(self) -> str:
        """``file:line:column`` as far as known, or ``""``."""
        parts = [str(p) for p in (self.file, self.line, self.column) if p is not None]
        return ":".join(parts)

    @property
    def location(self) -> str:
        """``file:line`` (or what is known of it; ``(plan)`` when nothing is)."""
        if self.file is None:
            return "(plan)"
        return f"{self.file}:{self.line}" if self.line else self.file

    @property
    def cell(self) -> str | None:
        """``version@phase``."""
        return f"{self.version}@{self.phase}" if self.version and self.phase else None

    def summary(self) -> str:
        """One line: location, cell, reason, fix."""
        where = f" [{self.cell}]" if self.cell else ""
        name = f" {self.query}" if self.query else ""
        return f"{self.location}:{name}{where} {self.reason} (fix: {self.fix})"


@dataclass(frozen=True)
class Voice:
    """The words one command writes its findings in.

    ``json_keys``: the (key, field) pairs of a finding's JSON in order, every one written;
    None writes every field that is set, under its own name. ``detailed``: a JUnit case
    names the finding by file:line:column with its rule as the failure type and shows
    severity, SQL and safe form on their own lines (the lint's form), rather than by
    file:line and query with the one-line summary (check's).
    """

    tool: str
    fix_label: str
    severity_in_title: bool
    detailed: bool
    json_keys: tuple[tuple[str, str], ...] | None = None


LINT = Voice(
    tool="migrator lint",
    fix_label="Safe form",
    severity_in_title=True,
    detailed=True,
    json_keys=(
        ("rule", "rule"),
        ("severity", "severity"),
        ("message", "reason"),
        ("safe_form", "fix"),
        ("sql", "sql"),
        ("operation", "operation"),
        ("file", "file"),
        ("line", "line"),
        ("column", "column"),
        ("suppressed", "suppressed"),
    ),
)
CHECK = Voice(tool="migrator check", fix_label="Fix", severity_in_title=False, detailed=False)


def finding_json(f: Finding, voice: Voice) -> dict[str, Any]:
    """A finding as plain data for --format json."""
    if voice.json_keys is None:
        return {k: v for k, v in asdict(f).items() if v is not None}
    return {key: getattr(f, field) for key, field in voice.json_keys}


def junit_case(
    parent: ET.Element, f: Finding, voice: Voice, default_file: str, failing: bool
) -> ET.Element:
    """A JUnit test case for a finding: a failure when it fails the run, else its text
    as the case's output."""
    if voice.detailed:
        name = f"{f.rule or f.check} {f.position or default_file}"
        kind = f.rule or f.check
        text = f"{f.severity}: {f.reason}\nsql: {f.sql}\nsafe form: {f.fix}"
        out_text = text
    else:
        name = f"{f.rule or f.check} {f.location}" + (f" {f.query}" if f.query else "")
        kind = f.check
        text = f.summary()
        out_text = f"{f.severity}: {text}"
    case = ET.SubElement(
        parent,
        "testcase",
        name=name,
        classname=f"migrator.lint.{f.rule}" if f.rule else f"migrator.check.{f.check}",
        file=f.file or default_file,
        line=str(f.line or 0),
    )
    if failing:
        ET.SubElement(case, "failure", message=f.reason, type=kind).text = text
    else:
        ET.SubElement(case, "system-out").text = out_text
    return case


def github_annotation(f: Finding, voice: Voice, default_file: str, failing: bool) -> str:
    """A GitHub workflow command for a finding at its file, line and column: ``::error``
    for what fails the run, ``::warning`` for a warning, ``::notice`` for the rest."""
    level = "error" if failing else ("warning" if f.severity == "warning" else "notice")
    props = [f"file={github_property(f.file or default_file)}"]
    if f.line:
        props.append(f"line={f.line}")
    if f.column:
        props.append(f"col={f.column}")
    title = f"{voice.tool}: {f.rule or f.check}"
    title += f" ({f.severity})" if voice.severity_in_title else ""
    title += f" [{f.cell}]" if f.cell else ""
    props.append(f"title={github_property(title)}")
    body = (f"{f.query}: " if f.query else "") + f"{f.reason} {voice.fix_label}: {f.fix}"
    return f"::{level} {','.join(props)}::{github_data(body)}"


def suite_counts(element: ET.Element, tests: int, failures: int, skipped: int) -> None:
    """A JUnit suite's (or the root's) counts."""
    element.set("tests", str(tests))
    element.set("failures", str(failures))
    element.set("errors", "0")
    element.set("skipped", str(skipped))


def junit_document(root: ET.Element) -> str:
    """A JUnit tree as the XML text written out."""
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def github_data(text: str) -> str:
    """A workflow command's message, escaped as GitHub reads it."""
    # The escaping GitHub's toolkit applies (@actions/core command.ts).
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_property(text: str) -> str:
    """A workflow command's property value (file, title), escaped."""
    return github_data(text).replace(":", "%3A").replace(",", "%2C")
