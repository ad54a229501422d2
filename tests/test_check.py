"""`migrator check` end to end: the report's formats, exit codes, the live database path,
the chain of earlier plans, and the audit event the switch's gate reads."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from migrator.cli import app
from migrator.commands.check import (
    CHECK_FAILED,
    CHECK_PASSED,
    CheckOptions,
    CommandPhases,
    check,
)
from migrator.db.embedded import memory_folder, start
from migrator.errors import GateRefused, UsageError
from migrator.observer import Observer
from migrator.plan.loader import load_plan
from migrator.verify.phase_schemas import baseline_file, earlier_plans
from migrator.verify.report import CheckReport
from migrator.verify.scratch import ScratchServer, load_sql, portable_dump

PAGILA = Path(__file__).parent / "corpus" / "pagila-schema.sql"

PLAN = """\
release: 2026-12-phone
baseline: {baseline}
versions:
  old: {{name: v1, queries: queries/v1/}}
  new: {{name: v2, queries: queries/v2.yaml}}
expand:
  - add_column:
      table: customer
      column: {{name: phone, type: text}}
      up: "''"
      final: {{nullable: false}}
"""

OLD = """\
-- name: GetCustomer :one
SELECT customer_id, first_name, last_name, email FROM customer WHERE customer_id = $1;

-- name: CreateCustomer :exec
INSERT INTO customer (store_id, first_name, last_name, email, address_id)
VALUES (%(store_id)s, %(first)s, %(last)s, %(email)s, %(address)s);
"""

NEW_GOOD = """\
- name: customer_with_phone
  sql: SELECT customer_id, first_name, phone FROM customer WHERE customer_id = :id
- name: create_customer
  sql: |
    INSERT INTO customer (store_id, first_name, last_name, email, address_id, phone)
    VALUES (:store, :first, :last, :email, :address, :phone)
"""

NEW_BAD = """\
- name: customer_with_phone
  sql: |
    SELECT customer_id, first_name,
           phone_number
    FROM customer WHERE customer_id = :id
- name: create_customer
  sql: |
    INSERT INTO customer (store_id, first_name, last_name, email, address_id)
    VALUES (:store, :first, :last, :email, :address)
"""


def write_release(folder: Path, new: str, baseline: Path | str = PAGILA) -> Path:
    (folder / "queries" / "v1").mkdir(parents=True, exist_ok=True)
    (folder / "queries" / "v1" / "customers.sql").write_text(OLD)
    (folder / "queries" / "v2.yaml").write_text(new)
    plan = folder / "plan.yaml"
    plan.write_text(PLAN.format(baseline=baseline))
    return plan


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    """A scratch server of the module's own, without fsync, as `migrator check` starts one."""
    server = start(temp_root=memory_folder())  # in memory, as check's own
    try:
        ScratchServer(server.url).make_disposable()
        yield server.url
    finally:
        server.stop()


class Progress(Observer):
    """The progress a check tells its observer."""

    def __init__(self) -> None:
        self.told: list[tuple[str, int, int | None, dict[str, Any]]] = []

    def progress(self, task: str, done: int, total: int | None, **extra: Any) -> None:
        self.told.append((task, done, total, extra))


@pytest.fixture(scope="module")
def bad_progress() -> Progress:
    return Progress()


@pytest.fixture(scope="module")
def bad_run(
    tmp_path_factory: pytest.TempPathFactory, scratch: str, bad_progress: Progress
) -> tuple[Path, CheckReport]:
    folder = tmp_path_factory.mktemp("bad")
    plan = write_release(folder, NEW_BAD)
    return plan, check(
        load_plan(plan), plan, CheckOptions(scratch_url=scratch, observer=bad_progress)
    )


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


# -- what a new user sees ----------------------------------------------------------------------


def test_new_version_reading_a_forgotten_column_fails_at_its_file_and_line(
    bad_run: tuple[Path, CheckReport],
) -> None:
    _, report = bad_run
    assert report.failed
    errors = [f for f in report.findings if f.severity == "error"]
    forgotten = [f for f in errors if f.check == "prepare"]
    assert {(f.phase, f.line, f.query) for f in forgotten} == {
        ("expanded", 4, "customer_with_phone"),
        ("contracted", 4, "customer_with_phone"),
    }
    assert all(f.file and f.file.endswith("v2.yaml") for f in forgotten)
    assert 'column "phone_number" does not exist' in forgotten[0].reason
    assert "expand must add everything" in forgotten[0].fix
    # ... and its INSERT leaves out phone, NOT NULL once the contract ran
    (missing,) = [f for f in errors if f.check == "insert-not-null"]
    assert (missing.phase, missing.line, missing.version) == ("contracted", 8, "new (v2)")
    assert "write phone" in missing.fix


def test_progress_tells_each_cell_once_it_is_done(
    bad_run: tuple[Path, CheckReport], bad_progress: Progress
) -> None:
    """docs/check.md, "Progress": one ``progress("check", done, 6, cell=...)`` a cell of
    the matrix, as that cell finishes: ``done`` counts the cells finished, 1 to 6 (not the
    cells before the one about to start, 0 to 5), ``cell`` names the one just finished;
    the six run at once, so in no fixed order."""
    told = [
        (done, total, extra) for task, done, total, extra in bad_progress.told if task == "check"
    ]
    assert [done for done, _, _ in told] == [1, 2, 3, 4, 5, 6]
    assert {total for _, total, _ in told} == {6}
    assert sorted(extra["cell"] for _, _, extra in told) == sorted(
        f"{v}@{p}" for v in ("old", "new") for p in ("before", "expanded", "contracted")
    )


def test_the_fixed_plan_passes_and_the_cli_exits_0(tmp_path: Path, scratch: str) -> None:
    plan = write_release(tmp_path, NEW_GOOD)
    code, output = cli("check", str(plan), "--scratch-url", scratch)
    assert code == 0, output
    assert "check passed" in output


def test_cli_table_names_the_file_line_and_fix_and_exits_1(
    tmp_path: Path, scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # findings name files relative to the working folder
    write_release(tmp_path, NEW_BAD)
    code, output = cli("check", "plan.yaml", "--scratch-url", scratch)
    assert code == 1, output
    flat = " ".join(output.split())
    assert "queries/v2.yaml:4" in flat and "phone_number" in flat and "check failed" in flat


# -- machine formats ---------------------------------------------------------------------------


def test_junit_is_valid_with_a_case_per_query_and_cell(bad_run: tuple[Path, CheckReport]) -> None:
    _, report = bad_run
    root = ET.fromstring(report.to_junit())
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    cells = [s for s in suites if s.get("name", "").startswith("check ")]
    assert len(cells) == 6
    total = failures = 0
    for suite in suites:
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(cases)
        failed = [c for c in cases if c.find("failure") is not None]
        skipped = [c for c in cases if c.find("skipped") is not None]
        assert int(suite.get("failures", "-1")) == len(failed)
        assert int(suite.get("skipped", "-1")) == len(skipped)
        assert suite.get("errors") == "0"
        for case in cases:
            assert case.get("name") and case.get("classname")
            assert int(case.get("line", "x")) >= 0
            for failure in case.findall("failure"):
                assert failure.get("message") and failure.text
        total += len(cases)
        failures += len(failed)
    assert int(root.get("tests", "-1")) == total
    assert int(root.get("failures", "-1")) == failures
    # 2 queries per version in each of the 6 cells
    assert sum(len(s.findall("testcase")) for s in cells) == 12
    failing = {
        (c.get("classname"), c.get("line"))
        for s in cells
        for c in s.findall("testcase")
        if c.find("failure") is not None
    }
    assert failing == {
        ("migrator.check.new.expanded", "3"),
        ("migrator.check.new.contracted", "3"),
        ("migrator.check.new.contracted", "8"),
    }
    # new@before is informational: its failures are skipped cases, not failures
    before = next(s for s in cells if s.get("name") == "check new (v2)@before")
    assert before.get("failures") == "0" and int(before.get("skipped", "0")) >= 1


GITHUB_LINE = re.compile(
    r"^::(error|warning|notice) file=[^,:]+(,line=\d+)?(,col=\d+)?,title=[^:,]+::[^\r\n]+$"
)


def test_github_annotations_are_workflow_commands(bad_run: tuple[Path, CheckReport]) -> None:
    _, report = bad_run
    lines = report.to_github()
    assert lines and all(GITHUB_LINE.match(line) for line in lines), lines
    errors = [line for line in lines if line.startswith("::error ")]
    assert any("v2.yaml,line=4," in line and "phone_number" in line for line in errors)
    # informational cells never annotate as errors
    assert not any("@before" in line for line in errors)


def test_github_escapes_newlines_and_percent() -> None:
    from migrator.verify.report import Finding

    report = CheckReport("r", "h", "plan.yaml", "x", 180000)
    report.problems.append(
        Finding(
            check="syntax",
            severity="error",
            reason="50% of\nit",
            fix="a, b: c",
            file="q,1.sql",
            line=3,
        )
    )
    (line,) = report.to_github()
    assert line.startswith("::error file=q%2C1.sql,line=3,")
    assert line.endswith("::50%25 of%0Ait Fix: a, b: c")


def test_cli_formats_json_junit_github(tmp_path: Path, scratch: str) -> None:
    plan = write_release(tmp_path, NEW_BAD)
    code, output = cli("check", str(plan), "--scratch-url", scratch, "--format", "json")
    assert code == 1
    data = json.loads(output)
    assert data["passed"] is False and data["counts"]["error"] == 3
    assert {c["phase"] for c in data["cells"]} == {"before", "expanded", "contracted"}
    code, output = cli("check", str(plan), "--scratch-url", scratch, "--json")
    assert code == 1 and json.loads(output)["counts"] == data["counts"]
    junit = tmp_path / "report.xml"
    code, output = cli(
        "check", str(plan), "--scratch-url", scratch, "-f", "junit", "-o", str(junit)
    )
    assert code == 1 and "junit report in" in output
    ET.parse(junit)
    code, output = cli("check", str(plan), "--scratch-url", scratch, "--format", "github")
    assert code == 1
    assert all(GITHUB_LINE.match(line) for line in output.strip().splitlines())


def test_bad_input_exits_2(tmp_path: Path, scratch: str) -> None:
    plan = write_release(tmp_path, NEW_GOOD)
    plan.write_text(plan.read_text().replace("queries/v1/", "queries/v9/"))
    code, output = cli("check", str(plan), "--scratch-url", scratch)
    assert code == 2
    assert "versions.old.queries: queries/v9/ does not exist" in output
    code, output = cli("check", str(plan), "--pg-version", "fifteen")
    assert code == 2 and "--pg-version" in output


# -- where `before` comes from ---------------------------------------------------------------


def test_chain_of_earlier_plans_builds_before(tmp_path: Path, scratch: str) -> None:
    """The second release's old version uses what the first release added."""
    (tmp_path / "schema.sql").write_text(
        "CREATE TABLE account (id bigint PRIMARY KEY, email text NOT NULL);\n"
    )
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "v1.sql").write_text("SELECT id, email, nickname FROM account;\n")
    (tmp_path / "q" / "v2.sql").write_text("SELECT id, nickname, plan FROM account;\n")
    (tmp_path / "01-nickname.yaml").write_text(
        "release: r1\nbaseline: schema.sql\n"
        "expand:\n  - add_column: {table: account, column: {name: nickname, type: text}}\n"
    )
    second = tmp_path / "02-plan.yaml"
    second.write_text(
        "release: r2\nafter: r1\n"
        "versions: {old: {name: v1, queries: q/v1.sql}, new: {name: v2, queries: q/v2.sql}}\n"
        "expand:\n  - add_column: {table: account, column: {name: plan, type: text}}\n"
    )
    report = check(load_plan(second), second, CheckOptions(scratch_url=scratch))
    assert report.before_source == "baseline schema.sql + r1"
    assert not report.failed, [f.summary() for f in report.findings]
    # Without the first plan in the folder, the chain is broken: a clear usage error.
    (tmp_path / "01-nickname.yaml").unlink()
    with pytest.raises(UsageError, match="follows release 'r1', but no plan of that release"):
        check(load_plan(second), second, CheckOptions(scratch_url=scratch))


def test_a_plan_with_its_own_baseline_starts_a_new_chain(tmp_path: Path) -> None:
    """`baseline:` is the schema before the plan, whatever `after:` says: the release it
    follows (one from before migrator, or a plan in the folder) is not looked for."""
    (tmp_path / "schema.sql").write_text("CREATE TABLE account (id bigint PRIMARY KEY);\n")
    plan_path = tmp_path / "05-plan.yaml"
    plan_path.write_text(
        "release: r5\nafter: before-migrator\nbaseline: schema.sql\n"
        "expand:\n  - add_column: {table: account, column: {name: plan, type: text}}\n"
    )
    plan = load_plan(plan_path)
    assert earlier_plans(plan, plan_path) == []
    assert baseline_file(plan, plan_path) == (tmp_path / "schema.sql").resolve()
    (tmp_path / "old.sql").write_text("CREATE TABLE gone (id int);\n")
    (tmp_path / "04-plan.yaml").write_text(
        "release: before-migrator\nbaseline: old.sql\n"
        "expand:\n  - add_column: {table: gone, column: {name: x, type: text}}\n"
    )
    assert earlier_plans(plan, plan_path) == []
    assert baseline_file(plan, plan_path) == (tmp_path / "schema.sql").resolve()


def test_live_database_schema_and_the_audit_event(
    tmp_path: Path, scratch: str, fresh_db: str
) -> None:
    load_sql(fresh_db, PAGILA)
    plan_path = write_release(tmp_path, NEW_GOOD, baseline="nowhere.sql")
    plan = load_plan(plan_path)
    report = check(plan, plan_path, CheckOptions(database_url=fresh_db, scratch_url=scratch))
    assert report.before_source == "the live schema (pg_dump --schema-only)"
    assert not report.failed, [f.summary() for f in report.findings]
    (tmp_path / "queries" / "v2.yaml").write_text(NEW_BAD)
    failed = check(plan, plan_path, CheckOptions(database_url=fresh_db, scratch_url=scratch))
    assert failed.failed
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute(
            "SELECT action, release, plan_hash FROM migrator.events "
            "WHERE action LIKE 'check.%' ORDER BY id"
        ).fetchall()
        # the live schema was only read: no phone column, no trigger
        assert conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'customer' AND column_name = 'phone'"
        ).fetchone() == (0,)
    assert rows == [
        (CHECK_PASSED, plan.release, plan.digest()),
        (CHECK_FAILED, plan.release, plan.digest()),
    ]


CUSTOMER_15 = """\
CREATE TABLE customer (
    customer_id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    store_id integer NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    email text,
    address_id integer NOT NULL
)"""


@pytest.mark.parametrize("scratch_on", ["pg18", "pg15"])
def test_live_postgresql_15_schema_is_copied(
    tmp_path: Path, scratch: str, pg15_server: Any, scratch_on: str
) -> None:
    """The live schema of a PostgreSQL 15 copied with pg_dump 18: into the embedded 18
    (Debian's 15.20 gives every column a pg_attver option that 18 refuses) and into a 15
    scratch server (pg_dump 18 writes SET transaction_timeout, which 15 refuses)."""
    url = pg15_server.create_database("live15")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            # The columns the queries use (pagila's dump needs PostgreSQL 18). A
            # documented column option is copied; pg_attver, the server's own, is not.
            conn.execute(CUSTOMER_15)
            conn.execute("ALTER TABLE customer ALTER COLUMN store_id SET (n_distinct = 2)")
        plan_path = write_release(tmp_path, NEW_GOOD, baseline="nowhere.sql")
        plan = load_plan(plan_path)
        target = scratch if scratch_on == "pg18" else pg15_server.admin_url
        report = check(plan, plan_path, CheckOptions(database_url=url, scratch_url=target))
        assert report.before_source == "the live schema (pg_dump --schema-only)"
        assert not report.failed, [f.summary() for f in report.findings]
        assert report.server_version // 10000 == 15
        with psycopg.connect(url) as conn:
            events = conn.execute("SELECT action FROM migrator.events").fetchall()
        assert events == [(CHECK_PASSED,)]
    finally:
        pg15_server.drop_database(url)


def test_portable_dump_drops_what_the_target_refuses_and_keeps_the_rest() -> None:
    dump = (
        "SET statement_timeout = 0;\n"
        "SET transaction_timeout = 0;\n"
        "CREATE TABLE public.t (\n    id bigint NOT NULL\n);\n"
        "ALTER TABLE ONLY public.t ALTER COLUMN id SET (pg_attver=26489176);\n"
        "ALTER TABLE ONLY public.t ALTER COLUMN id SET (pg_attver=1, n_distinct=5);\n"
        "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n"
    )
    out = portable_dump(dump, frozenset({"statement_timeout"}))
    assert out == (
        "SET statement_timeout = 0;\n"
        "CREATE TABLE public.t (\n    id bigint NOT NULL\n);\n"
        "ALTER TABLE ONLY public.t ALTER COLUMN id SET (n_distinct = 5);\n"
        "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n"
    )


def test_check_after_expand_rebuilds_the_schema_before_with_the_rollback(
    tmp_path: Path, scratch: str, fresh_db: str
) -> None:
    from migrator.commands import Options, expand
    from migrator.commands.session import STATE
    from migrator.db.connection import connect, make_engine

    load_sql(fresh_db, PAGILA)
    plan_path = write_release(tmp_path, NEW_GOOD)
    plan = load_plan(plan_path)
    expand(plan, Options(database_url=fresh_db))
    report = check(plan, plan_path, CheckOptions(database_url=fresh_db, scratch_url=scratch))
    assert report.before_source == (
        "the live schema (pg_dump --schema-only), with the expand of 2026-12-phone undone "
        "(its rollback)"
    )
    assert not report.failed, [f.summary() for f in report.findings]
    (tmp_path / "queries" / "v2.yaml").write_text(NEW_BAD)
    assert check(plan, plan_path, CheckOptions(database_url=fresh_db, scratch_url=scratch)).failed
    with psycopg.connect(fresh_db) as conn:
        # the live database keeps its expand: only the scratch copy was rolled back
        assert conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'customer' AND column_name = 'phone'"
        ).fetchone() == (1,)
        assert conn.execute(
            "SELECT phase FROM migrator.releases WHERE name = '2026-12-phone'"
        ).fetchone() == ("expanded",)
        verdicts = conn.execute(
            "SELECT action FROM migrator.events WHERE action LIKE 'check.%' ORDER BY id"
        ).fetchall()
    assert verdicts == [(CHECK_PASSED,), (CHECK_FAILED,)]
    # Half expanded, the live schema is neither before nor after: refused.
    engine = make_engine(fresh_db)
    try:
        with connect(engine) as conn:
            STATE.set_phase(conn, plan.release, "expanding")
            conn.commit()
    finally:
        engine.dispose()
    with pytest.raises(GateRefused, match="is expanding on this database.*`migrator expand`"):
        check(plan, plan_path, CheckOptions(database_url=fresh_db, scratch_url=scratch))


def test_junit_has_a_case_per_lint_finding() -> None:
    from migrator.verify.report import Cell, Finding, QueryResult

    report = CheckReport("r", "h", "plans/r.yaml", "baseline", 180000)
    cell = Cell("old", "v1", "expanded", True)
    cell.results.append(QueryResult("q1", "q/v1.sql", 3))
    report.cells.append(cell)
    report.lint += [
        Finding(
            check="lint",
            rule="M001",
            severity="error",
            reason="CREATE INDEX blocks writes",
            fix="CREATE INDEX CONCURRENTLY",
            file="plans/r.yaml",
            line=7,
            column=5,
        ),
        Finding(
            check="lint",
            rule="M026",
            severity="warning",
            reason="json column",
            fix="jsonb",
            file="plans/r.yaml",
            line=9,
        ),
    ]
    root = ET.fromstring(report.to_junit())
    lint = root.find("testsuite[@name='lint and query sets']")
    assert lint is not None and lint.get("tests") == "2" and lint.get("failures") == "1"
    m001, m026 = lint.findall("testcase")
    assert m001.get("classname") == "migrator.lint.M001" and m001.get("line") == "7"
    assert m001.find("failure") is not None and m026.find("failure") is None
    assert "json column" in (m026.findtext("system-out") or "")
    assert root.get("tests") == "3" and root.get("failures") == "1"
    assert report.failed
    (error, warning) = report.to_github()
    assert error.startswith("::error file=plans/r.yaml,line=7,col=5,title=migrator check%3A M001::")
    assert warning.startswith("::warning file=plans/r.yaml,line=9,")


def test_unreachable_scratch_server_exits_4_without_the_password(tmp_path: Path) -> None:
    plan = write_release(tmp_path, NEW_GOOD)
    code, output = cli("check", str(plan), "--scratch-url", "postgresql://u:s3cret@127.0.0.1:1/x")
    assert code == 4
    assert "cannot connect to the scratch server" in output and "s3cret" not in output


def test_live_database_with_an_earlier_release_and_its_state(
    tmp_path: Path, scratch: str, fresh_db: str
) -> None:
    """migrator's own schema (state tables, trigger functions) on the live database does
    not get in the way: the dump leaves the state rows out, the scratch copy starts its own."""
    from migrator.commands import Options, complete, contract, expand

    load_sql(fresh_db, PAGILA)
    first_dir = tmp_path / "first"
    first_dir.mkdir()
    first_path = write_release(first_dir, NEW_GOOD)
    first = load_plan(first_path)
    opts = Options(database_url=fresh_db, force=True, force_reason="test")
    expand(first, opts)
    complete(first, opts)
    contract(opts, first.release)
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    (second_dir / "old.sql").write_text(
        "SELECT customer_id, phone FROM customer WHERE customer_id = $1;\n"
    )
    (second_dir / "new.sql").write_text(
        "SELECT customer_id, phone, vip FROM customer WHERE customer_id = $1;\n"
    )
    second_path = second_dir / "plan.yaml"
    second_path.write_text(
        f"release: 2027-01-vip\nafter: {first.release}\n"
        "versions: {old: {name: v2, queries: old.sql}, new: {name: v3, queries: new.sql}}\n"
        "expand:\n  - add_column: {table: customer, column: {name: vip, type: boolean, default: false}}\n"
    )
    second = load_plan(second_path)
    report = check(second, second_path, CheckOptions(database_url=fresh_db, scratch_url=scratch))
    assert not report.failed, [f.summary() for f in report.findings]
    assert report.queries == {"old": 1, "new": 1}


def test_a_warm_check_builds_no_phase_database_and_reports_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cache keeps the phase databases in a data directory keyed by the baseline, the
    # plans and migrator's code: a third check on the same plan applies nothing, and
    # reports what a check that built them does; a changed plan gets its own.
    expands: list[str] = []
    plain_expand = CommandPhases.expand

    def counted(self: CommandPhases, plan: Any, url: str, observer: Any) -> None:
        expands.append(plan.release)
        plain_expand(self, plan, url, observer)

    monkeypatch.setattr(CommandPhases, "expand", counted)
    plan_path = write_release(tmp_path, NEW_BAD)
    cache = tmp_path / "cache"

    def run() -> tuple[list[tuple[Any, ...]], str]:
        report = check(load_plan(plan_path), plan_path, CheckOptions(cache_dir=cache))
        found = [(f.check, f.severity, f.file, f.line, f.phase, f.reason) for f in report.findings]
        return found, report.before_source

    first = run()  # builds its phase databases; caches the initdb'd data directory
    assert first[0] and len(expands) == 1
    second = run()  # builds the data directory with the phase databases, and uses it
    assert second == first and len(expands) == 2
    # ... and keeps the copy with the baseline too, for a changed plan to start from.
    assert {"-phases-", "-baseline-"} <= {
        kind for p in cache.iterdir() for kind in ("-phases-", "-baseline-") if kind in p.name
    }
    assert run() == first and len(expands) == 2  # nothing applied

    plan_path.write_text(
        plan_path.read_text()
        + "  - add_column: {table: customer, column: {name: phone_number, type: text}}\n"
    )
    changed = run()
    assert len(expands) == 3
    assert changed[0] != first[0]
    assert not any("phone_number" in str(f[5]) for f in changed[0] if f[1] == "error")


def test_live_table_locked_is_exit_5_naming_it_and_its_holder(
    tmp_path: Path, scratch: str, fresh_db: str
) -> None:
    """pg_dump takes ACCESS SHARE on every table it dumps: behind another session's ACCESS
    EXCLUSIVE it waits the plan's lock_timeout (--lock-wait-timeout), then check stops
    with one line naming the table and the session holding it (exit 5), and records
    nothing on the live database."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(CUSTOMER_15)
    plan = write_release(tmp_path, NEW_GOOD, baseline="nowhere.sql")
    plan.write_text(plan.read_text().replace("expand:", "database: {lock_timeout: 50ms}\nexpand:"))
    with psycopg.connect(fresh_db) as holder:
        # LOCK returns once the lock is granted: the event the check then meets.
        holder.execute("LOCK TABLE customer IN ACCESS EXCLUSIVE MODE")
        pid = holder.info.backend_pid
        code, output = cli("check", str(plan), "--database-url", fresh_db, "--scratch-url", scratch)
        holder.rollback()
    assert code == 5, output
    [line] = output.strip().splitlines()
    assert "pg_dump waited lock_timeout 50ms for ACCESS SHARE on customer: " in line
    assert f"pid {pid} holds ACCESS EXCLUSIVE on it (idle in transaction: LOCK TABLE" in line
    assert "nothing was changed" in line
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT to_regclass('migrator.events')").fetchone() == (None,)
