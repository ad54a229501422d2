"""The check corpus: (plan, queries) cases on pagila, each labelled breaks or safe.

Every case must produce exactly the findings it lists: a missing one is a missed break,
an extra one a false alarm. See tests/corpus/README.md for the case format.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from migrator.commands.check import CheckOptions, check
from migrator.db.embedded import memory_folder, start
from migrator.plan.loader import load_plan
from migrator.verify.phase_schemas import _Cache
from migrator.verify.report import CheckReport, Finding
from migrator.verify.scratch import ScratchServer

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted((CORPUS / "cases").glob("*.yaml"))


def write_case(case: dict[str, Any], name: str, folder: Path) -> Path:
    """The case as files: plan.yaml, old.sql / old.yaml, new.sql / new.yaml, and the
    case's own schema.sql when pagila cannot hold what it needs."""
    plan = dict(case.get("plan") or {})
    plan.setdefault("release", name)
    plan["baseline"] = str(CORPUS / "pagila-schema.sql")
    if "schema" in case:
        (folder / "schema.sql").write_text(case["schema"])
        plan["baseline"] = str(folder / "schema.sql")
    versions: dict[str, Any] = {}
    for key, version in (("old", "v1"), ("new", "v2")):
        if f"{key}_yaml" in case:
            (folder / f"{key}.yaml").write_text(case[f"{key}_yaml"])
            versions[key] = {"name": version, "queries": f"{key}.yaml"}
        else:
            (folder / f"{key}.sql").write_text(case.get(key, ""))
            versions[key] = {"name": version, "queries": f"{key}.sql"}
    plan["versions"] = versions
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def describe(f: Finding) -> str:
    """``check version@phase file:line``, as the cases list them."""
    version = (f.version or "").split(" ")[0]
    where = f"{Path(f.file).name}:{f.line}" if f.file else "plan"
    return f"{f.check} {version}@{f.phase} {where}" if f.phase else f"{f.check} {where}"


def findings(report: CheckReport, *, must_pass: bool, severity: set[str]) -> list[str]:
    return sorted(
        describe(f)
        for f in report.findings
        if f.rule is None and f.must_pass == must_pass and f.severity in severity
    )


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    """A scratch server of the module's own, as `migrator check` starts one: embedded, and
    without fsync (it holds only copies), so the corpus spends its time checking."""
    server = start(temp_root=memory_folder())  # in memory, as check's own
    try:
        ScratchServer(server.url).make_disposable()
        yield server.url
    finally:
        server.stop()


def test_corpus_is_big_enough() -> None:
    labels = [yaml.safe_load(p.read_text())["label"] for p in CASES]
    assert len(CASES) >= 40
    assert labels.count("breaks") >= 15 and labels.count("safe") >= 15


def run_case(case_file: Path, folder: Path, scratch: str) -> CheckReport:
    """`migrator check` on one case, written out under ``folder``."""
    case = yaml.safe_load(case_file.read_text())
    path = write_case(case, case_file.stem, folder)
    return check(load_plan(path), path, CheckOptions(scratch_url=scratch))


@pytest.fixture(scope="module")
def reports(
    request: pytest.FixtureRequest, scratch: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[Path, CheckReport | BaseException]:
    """The selected cases, checked two at a time: much of a check is the server's work,
    so two run in little more than the time of one. The first runs alone, to load the
    pagila template the others copy."""
    selected = [
        item.callspec.params["case_file"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    ]

    def one(case_file: Path) -> CheckReport | BaseException:
        try:
            return run_case(case_file, tmp_path_factory.mktemp(case_file.stem), scratch)
        except BaseException as exc:  # reported by the case's own test
            return exc

    results: dict[Path, CheckReport | BaseException] = {}
    if selected:
        results[selected[0]] = one(selected[0])
        with ThreadPoolExecutor(max_workers=2) as pool:
            results.update(zip(selected[1:], pool.map(one, selected[1:]), strict=True))
    return results


@pytest.mark.parametrize("case_file", CASES, ids=[p.stem for p in CASES])
def test_case(case_file: Path, reports: dict[Path, CheckReport | BaseException]) -> None:
    case = yaml.safe_load(case_file.read_text())
    assert case["label"] in ("breaks", "safe"), "label a case breaks or safe"
    assert str(case.get("reason", "")).strip(), "say why the case breaks or is safe"
    report = reports[case_file]
    if isinstance(report, BaseException):
        raise report
    everything = "\n".join(f"{f.severity}: {f.summary()}" for f in report.findings)

    assert findings(report, must_pass=True, severity={"error"}) == sorted(case.get("errors", [])), (
        everything
    )
    warnings = findings(report, must_pass=True, severity={"warning"}) + findings(
        report, must_pass=False, severity={"warning"}
    )
    assert sorted(warnings) == sorted(case.get("warnings", [])), everything
    if "info" in case:
        assert findings(report, must_pass=False, severity={"info"}) == sorted(case["info"]), (
            everything
        )
    lint = sorted(f.rule or "" for f in report.lint)
    assert lint == sorted(case.get("lint", [])), everything
    assert report.failed == (case["label"] == "breaks"), everything


def test_two_checks_loading_one_baseline_share_it(
    scratch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks run two at a time on one scratch server (as here, or CI jobs sharing one):
    two that load the same baseline at once both find no template; the one whose rename
    comes second takes the first's copy instead of failing, and leaves no copy behind."""
    path = tmp_path / "schema.sql"
    path.write_text("CREATE TABLE shared_baseline (id int);")
    server = ScratchServer(scratch)
    name = _Cache.name(path)
    server.create(name)  # the other check's load, finished while this one was loading
    real = server.exists
    asked: list[str] = []

    def exists(database: str) -> bool:
        asked.append(database)
        return real(database) if len(asked) > 1 else False  # before the other finished

    monkeypatch.setattr(server, "exists", exists)
    try:
        assert _Cache.template_for(server, path) == name
        with psycopg.connect(scratch) as conn:
            left = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "_%",)
            ).fetchall()
        assert left == []
    finally:
        server.drop(name)
