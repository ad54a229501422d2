"""`migrator lint`: hold a plan's statements, raw SQL migration files, or Alembic
revisions (through their offline SQL) to the lint rules.

Offline by default (``pg_version`` sets the server version the verdicts follow); with a
database URL the operations build their statements against the live catalog and the
rules that need data (INVALID indexes, duplicates, row counts) apply too. Nothing is
changed in the database: every question is read-only and rolled back.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrator.errors import PlanError, UsageError
from migrator.files import read_text
from migrator.findings import (
    LINT,
    Finding,
    finding_json,
    github_annotation,
    github_data,
    github_property,
    junit_case,
    junit_document,
    suite_counts,
)
from migrator.lint import RuleSettings, lint_sql, normalize_version
from migrator.lint.sources import DEFAULT_VERSION, lint_plan_report

if TYPE_CHECKING:
    from migrator.authoring.alembic_sql import RevisionSql
    from migrator.engine.catalog import Catalog


@dataclass
class LintResult:
    """What one `migrator lint` run found."""

    source: str
    server_version: int
    findings: list[Finding] = field(default_factory=list)
    suppressed: list[Finding] = field(default_factory=list)
    unlinted: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """No finding, and every operation was judged."""
        return not self.findings and not self.unlinted

    def fails(self, fail_on: str = "warning") -> bool:
        """True when the run should fail CI: any finding (``warning``), or only errors
        (``error``); operations left unlinted always fail it."""
        if self.unlinted:
            return True
        if fail_on == "error":
            return any(f.severity == "error" for f in self.findings)
        return bool(self.findings)

    def to_json(self) -> dict[str, Any]:
        """Plain data for --format json."""
        return {
            "source": self.source,
            "server_version": self.server_version,
            "clean": self.clean,
            "findings": [finding_json(f, LINT) for f in self.findings],
            "suppressed": [finding_json(f, LINT) for f in self.suppressed],
            "unlinted": list(self.unlinted),
        }

    def _failing(self, finding: Finding, fail_on: str) -> bool:
        return fail_on == "warning" or finding.severity == "error"

    def to_github(self, fail_on: str = "warning") -> list[str]:
        """GitHub workflow commands: an annotation per finding at its file, line and
        column (``::error`` for what fails the run), and one per operation not linted."""
        lines = [
            github_annotation(f, LINT, self.source, self._failing(f, fail_on))
            for f in self.findings
        ]
        for item in self.unlinted:
            props = [f"file={github_property(self.source)}", "title=migrator lint%3A not linted"]
            lines.append(f"::error {','.join(props)}::{github_data(item)}")
        return lines

    def to_junit(self, fail_on: str = "warning") -> str:
        """JUnit XML: a case per finding (a failure when it fails the run), one per
        operation not linted (a failure), and one passing case when there is neither."""
        root = ET.Element("testsuites", name=f"migrator lint {self.source}")
        suite = ET.SubElement(root, "testsuite", name=f"lint {self.source}")
        failures = 0
        for f in self.findings:
            failing = self._failing(f, fail_on)
            junit_case(suite, f, LINT, self.source, failing)
            failures += failing
        for item in self.unlinted:
            case = ET.SubElement(suite, "testcase", name=f"not linted: {item}")
            ET.SubElement(case, "failure", message=item, type="not-linted")
            failures += 1
        if not self.findings and not self.unlinted:
            ET.SubElement(suite, "testcase", name=f"lint {self.source}", classname="migrator.lint")
        tests = max(1, len(self.findings) + len(self.unlinted))
        for element in (root, suite):
            suite_counts(element, tests, failures, 0)
        return junit_document(root)


def merged(results: Sequence[LintResult]) -> LintResult:
    """Several runs' results as one (plans and SQL files linted together)."""
    if len(results) == 1:
        return results[0]
    out = LintResult(
        source=", ".join(r.source for r in results),
        server_version=results[0].server_version if results else DEFAULT_VERSION,
    )
    for r in results:
        out.findings += r.findings
        out.suppressed += r.suppressed
        out.unlinted += r.unlinted
    return out


# A plan's database.lock_timeout when it says none, and the lint of SQL files': the
# documented default (docs/plan-format.md).
DEFAULT_LOCK_TIMEOUT = 1.0


def _no_pause(what: str, attempt: int, reason: str) -> None:
    return None


@contextmanager
def _catalog(
    database_url: str | None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
) -> Iterator[Catalog | None]:
    """The live catalog the rules ask, if any. A question that reads a table (its rows,
    its expressions) waits ``lock_timeout`` at most, once, for its ACCESS SHARE: behind
    another session's ACCESS EXCLUSIVE the lint stops with exit 5, naming the table and
    the holder (`Catalog.read_lock`); a lock any other read waits for is bounded by the
    session's lock_timeout too."""
    if not database_url:
        yield None
        return
    # Imported here: the lint of a file or a plan without a database needs no SQLAlchemy.
    from sqlalchemy.exc import DBAPIError

    from migrator.db.connection import connect, make_engine, sqlstate
    from migrator.durations import format_duration
    from migrator.engine.catalog import Catalog, LockWaits
    from migrator.errors import LockNotAcquired
    from migrator.sqltext import literal, text

    engine = make_engine(database_url)
    try:
        with connect(engine) as conn:
            if lock_timeout:
                ms = f"{max(1, round(lock_timeout * 1000))}ms"
                conn.execute(text(f"SET lock_timeout = {literal(ms)}"))
                conn.commit()  # the session's, whatever the questions roll back
            waits = LockWaits(lock_timeout, 0, _no_pause, who="the lint") if lock_timeout else None
            try:
                yield Catalog(conn, waits)
            except DBAPIError as exc:
                if sqlstate(exc) != "55P03":
                    raise
                raise LockNotAcquired(
                    f"the lint could not take a lock within lock_timeout "
                    f"{format_duration(lock_timeout)}: another session holds one on a table "
                    "it reads; nothing was changed; rerun when it is done"
                ) from None
            finally:
                conn.rollback()
    finally:
        engine.dispose()


def lint(
    plan_path: str | Path,
    *,
    pg_version: int | None = None,
    database_url: str | None = None,
    enable: Sequence[str] = (),
    settings: RuleSettings | None = None,
) -> LintResult:
    """Lint every statement a plan will run (expand, rollback, contract, `sql` text);
    ``enable`` names optional rules to apply too, ``settings`` the project's rule settings."""
    from migrator.plan.loader import load_plan

    settings = settings or RuleSettings()
    plan = load_plan(plan_path)
    with _catalog(database_url, plan.database.lock_timeout) as catalog:
        report = lint_plan_report(
            plan, pg_version, catalog, enable=sorted({*enable, *settings.enable})
        )
    return LintResult(
        source=str(plan_path),
        server_version=report.server_version,
        findings=settings.apply(report.active),
        suppressed=settings.apply(report.suppressed),
        unlinted=report.unlinted,
    )


def lint_sql_files(
    paths: Sequence[str | Path],
    *,
    pg_version: int | None = None,
    database_url: str | None = None,
    assume_in_transaction: bool = False,
    enable: Sequence[str] = (),
    settings: RuleSettings | None = None,
) -> LintResult:
    """Lint raw SQL migration files, each as psql would run it (or in one transaction),
    under the project's rule ``settings``."""
    if not paths:
        raise UsageError("give a plan, or --sql FILE for raw SQL migrations")
    settings = settings or RuleSettings()
    result = LintResult(
        source=", ".join(str(p) for p in paths),
        server_version=normalize_version(pg_version) or DEFAULT_VERSION,
    )
    with _catalog(database_url) as catalog:
        if catalog is not None and pg_version is None:
            result.server_version = catalog.server_version
        for path in paths:
            text = read_text(path, "SQL file")
            found = lint_sql(
                text,
                result.server_version,
                file=str(path),
                catalog=catalog,
                assume_in_transaction=assume_in_transaction,
                include_suppressed=True,
                enable=sorted({*enable, *settings.enable}),
            )
            found = settings.apply(found)
            result.findings += [f for f in found if f.suppressed is None]
            result.suppressed += [f for f in found if f.suppressed is not None]
    return result


@dataclass
class _Place:
    """Where a line of the offline SQL came from."""

    file: str
    line: int | None
    revision: str


def _alembic_text(revisions: Sequence[RevisionSql]) -> tuple[str, list[_Place]]:
    """The revisions' SQL as one script, each revision in its own transaction (as
    PostgreSQL's transactional DDL runs it), and the place of each of its lines."""
    parts: list[str] = []
    places: list[_Place] = []

    def add(text: str, place: _Place) -> None:
        parts.append(text)
        places.extend([place] * text.count("\n"))

    for rev in revisions:
        whole = _Place(rev.path, None, rev.revision)
        add("BEGIN;\n", whole)
        last = whole
        for chunk in rev.chunks:
            place = _Place(rev.path, chunk.line, rev.revision) if chunk.line else last
            for waiver in chunk.waivers:
                add(f"-- {waiver}\n", place)
            text = chunk.sql if chunk.sql.endswith("\n") else chunk.sql + "\n"
            add(text, place)
            last = place
        add("COMMIT;\n", whole)
    return "".join(parts), places


def lint_alembic(
    specs: Sequence[str],
    *,
    config: Path | None = None,
    script_location: str | None = None,
    pg_version: int | None = None,
    database_url: str | None = None,
    enable: Sequence[str] = (),
    settings: RuleSettings | None = None,
) -> LintResult:
    """Lint Alembic revisions (``REV``, ``BASE:HEAD``, revision files, or every one)
    through the SQL `alembic upgrade --sql` writes for them, each finding named at its
    revision file and the line of the op call. Each revision runs in its own transaction;
    a table created by an earlier revision of the same run counts as new."""
    from migrator.authoring.alembic_import import script_location as find_location
    from migrator.authoring.alembic_sql import offline_sql, select_revisions

    settings = settings or RuleSettings()
    location = find_location(config, script_location)
    scripts = select_revisions(location, list(specs))
    if not scripts:  # only files that are no revisions (env.py): nothing to lint
        return LintResult(
            source=f"Alembic revisions in {location}",
            server_version=normalize_version(pg_version) or DEFAULT_VERSION,
        )
    revs = offline_sql(scripts)
    text, places = _alembic_text(revs)

    def place_of(line: int | None) -> _Place | None:
        if line is None or not 1 <= line <= len(places):
            return None
        return places[line - 1]

    label = "<alembic offline SQL>"
    result = LintResult(
        source=f"Alembic revisions {', '.join(s.revision for s in scripts)} in {location}",
        server_version=normalize_version(pg_version) or DEFAULT_VERSION,
    )
    with _catalog(database_url) as catalog:
        if catalog is not None and pg_version is None:
            result.server_version = catalog.server_version
        try:
            found = lint_sql(
                text,
                result.server_version,
                file=label,
                catalog=catalog,
                include_suppressed=True,
                enable=sorted({*enable, *settings.enable}),
            )
        except PlanError as exc:
            where = exc.location or ""
            line = int(where.split(":")[1]) if where.startswith(label + ":") else None
            place = place_of(line)
            if place is None:
                raise
            at = f"{place.file}:{place.line}" if place.line else place.file
            raise PlanError(
                f"revision {place.revision}: {exc.reason} (in its offline SQL)", location=at
            ) from None
    for finding in settings.apply(found):
        place = place_of(finding.line)
        if place is not None:
            finding.file, finding.line, finding.column = place.file, place.line, None
            finding.operation = f"revision {place.revision}"
        if finding.suppressed is None:
            result.findings.append(finding)
        else:
            result.suppressed.append(finding)
    return result
