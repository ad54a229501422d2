"""`migrator gate --for switch|complete|contract`: the gate a phase would check, every
condition that does not hold named, and nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from migrator import commands
from migrator.cli import app
from migrator.errors import ExitCode
from tests.support import phone_release
from tests.support.switch_env import command_section, record_check, seed_users, switch_plan

TABLES = ("releases", "steps", "contracts", "events", "backfill_ranges")


def _counts(url: str) -> dict[str, int]:
    """Rows of every state table (none where the state schema does not exist)."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regnamespace('migrator')").fetchone() == (None,):
            return {}
        return {
            t: int(conn.execute(f"SELECT count(*) FROM migrator.{t}").fetchone()[0])  # type: ignore[index]
            for t in TABLES
        }


def _gate(url: str, plan: Any, phase: str) -> commands.GateResult:
    """The gate's verdict, checked to have written nothing."""
    before = _counts(url)
    result = commands.gate(plan, commands.Options(database_url=url), phase)
    assert _counts(url) == before
    return result


def test_switch_gate_refuses_before_expand_and_check_and_passes_after(
    fresh_db: str, tmp_path: Path
) -> None:
    state = tmp_path / "lb"
    plan = switch_plan(command_section(state, steps=[50, 100]))
    seed_users(fresh_db)
    # Nothing at all yet: not even the state schema, and the gate does not make it.
    first = _gate(fresh_db, plan, "switch")
    assert not first.ok and first.phase is None
    assert len(first.problems) == 2  # both conditions, not only the first
    assert "has not been expanded" in first.problems[0]
    assert "`migrator check` has not run for this plan" in first.problems[1]
    assert _counts(fresh_db) == {}

    opts = commands.Options(database_url=fresh_db)
    commands.expand(plan, opts)
    expanded = _gate(fresh_db, plan, "switch")
    assert not expanded.ok and expanded.phase == "expanded"
    assert len(expanded.problems) == 1 and "has not run" in expanded.problems[0]

    record_check(fresh_db, plan, "check.failed")
    assert "`migrator check` failed" in _gate(fresh_db, plan, "switch").problems[0]
    record_check(fresh_db, plan)
    passed = _gate(fresh_db, plan, "switch")
    assert passed.ok and passed.problems == []
    # The switch itself agrees, and the gate moved no traffic.
    assert state.read_text() == "0\n"
    commands.switch(plan, opts)
    assert state.read_text() == "100\n"


def test_switch_gate_names_a_changed_plan(fresh_db: str, tmp_path: Path) -> None:
    state = tmp_path / "lb"
    plan = switch_plan(command_section(state, steps=[50, 100]))
    seed_users(fresh_db)
    commands.expand(plan, commands.Options(database_url=fresh_db))
    changed = switch_plan({**command_section(state, steps=[50, 100]), "steps": [100]})
    result = _gate(fresh_db, changed, "switch")
    assert not result.ok
    assert "changed since it started" in result.problems[0]
    assert "has not run for this plan" in result.problems[1]


def test_complete_gate_refuses_while_traffic_is_not_all_green(
    fresh_db: str, tmp_path: Path
) -> None:
    state = tmp_path / "lb"
    plan = switch_plan(command_section(state, steps=[50, 100]))
    seed_users(fresh_db)
    opts = commands.Options(database_url=fresh_db)
    assert "has not been expanded" in _gate(fresh_db, plan, "complete").problems[0]
    commands.expand(plan, opts)
    record_check(fresh_db, plan)
    blue = _gate(fresh_db, plan, "complete")
    assert not blue.ok and "traffic is blue 100% / green 0%" in blue.problems[0]
    commands.switch(plan, opts, step=1)
    half = _gate(fresh_db, plan, "complete")
    assert not half.ok and "blue 50% / green 50%" in half.problems[0]
    assert state.read_text() == "50\n"
    commands.switch(plan, opts)
    assert _gate(fresh_db, plan, "complete").ok
    commands.complete(plan, opts)


def test_complete_and_contract_gates_follow_backfill_and_conditions(fresh_db: str) -> None:
    phone_release.seed(fresh_db)
    plan = phone_release.plan()
    opts = commands.Options(database_url=fresh_db)
    commands.expand(plan, opts)
    unfilled = _gate(fresh_db, plan, "complete")
    assert not unfilled.ok and "backfill not done for" in unfilled.problems[0]
    contract_early = _gate(fresh_db, plan, "contract")
    assert not contract_early.ok
    assert "is expanded, not completed" in contract_early.problems[0]

    commands.backfill(plan, opts)
    assert _gate(fresh_db, plan, "complete").ok
    commands.complete(plan, opts)
    old = psycopg.connect(fresh_db, application_name="api-v1")
    try:
        held = _gate(fresh_db, plan, "contract")
        assert not held.ok and held.phase == "completed"
        assert [p.split(":")[0] for p in held.problems] == ["old-version-connections"]
        assert "api-v1" in held.problems[0]
    finally:
        old.close()
    assert _gate(fresh_db, plan, "contract").ok
    commands.contract(opts)
    assert _gate(fresh_db, plan, "contract").ok  # contracted: nothing left to wait for


def test_cli_gate_exit_codes_and_json(fresh_db: str, tmp_path: Path) -> None:
    state = tmp_path / "lb"
    data = {
        "release": "r-cli",
        "expand": [{"add_column": {"table": "users", "column": {"name": "phone", "type": "text"}}}],
        "switch": command_section(state, steps=[50, 100]),
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    seed_users(fresh_db)
    runner = CliRunner()
    url = ["--database-url", fresh_db]

    refused = runner.invoke(app, ["gate", str(path), "--for", "switch", *url, "--json"])
    assert refused.exit_code == ExitCode.REFUSED, refused.output
    verdict = json.loads(refused.stdout.splitlines()[0])
    assert verdict["ok"] is False and verdict["for_phase"] == "switch"
    assert len(verdict["problems"]) == 2
    plain = runner.invoke(app, ["gate", str(path), "--for", "switch", *url])
    assert plain.exit_code == ExitCode.REFUSED
    assert "has not been expanded" in plain.output and "migrator check" in plain.output

    bad = runner.invoke(app, ["gate", str(path), "--for", "deploy", *url])
    assert bad.exit_code == ExitCode.BAD_INPUT and "--for takes" in bad.output

    assert runner.invoke(app, ["expand", str(path), *url]).exit_code == 0
    from migrator.plan.loader import load_plan

    record_check(fresh_db, load_plan(path))
    ok = runner.invoke(app, ["gate", str(path), "--for", "switch", *url, "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout.splitlines()[0])["ok"] is True
    held = runner.invoke(app, ["gate", str(path), "--for", "switch", *url])
    assert held.exit_code == 0 and "the switch gate holds" in held.output


def test_release_phase_sql_function_answers_a_plain_role(fresh_db: str) -> None:
    phone_release.seed(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS app_reader")
        conn.execute("CREATE ROLE app_reader LOGIN")
    plan = phone_release.plan()
    opts = commands.Options(database_url=fresh_db)
    commands.init(opts)
    commands.init(opts)  # rerun-safe
    reader = psycopg.conninfo.make_conninfo(fresh_db, user="app_reader")

    def ask(release: str = "r1") -> list[tuple[Any, ...]]:
        with psycopg.connect(reader) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("app_reader",)
            return conn.execute("SELECT * FROM migrator.release_phase(%s)", (release,)).fetchall()

    assert ask() == []
    commands.expand(plan, opts)
    assert ask() == [("expanded", False)]
    commands.backfill(plan, opts)
    assert ask() == [("backfilled", True)]
    commands.complete(plan, opts)
    assert ask() == [("completed", True)]
    commands.contract(opts)
    assert ask() == [("contracted", True)]
    assert ask("nope") == []
    # The plain role reads the answer, not the state tables.
    with psycopg.connect(reader) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM migrator.releases")
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("DROP OWNED BY app_reader")
        conn.execute("DROP ROLE app_reader")


def test_deploy_manifests_ask_the_switch_gate(fresh_db: str, tmp_path: Path) -> None:
    """The args in deploy/ are a `migrator gate --for switch` the CLI accepts, and it
    refuses (exit 3) on a release not expanded: what fails the analysis, hook or step."""
    root = Path(__file__).resolve().parents[1] / "deploy"
    template = yaml.safe_load((root / "argo/analysis-template-schema-ready.yaml").read_text())
    (metric,) = template["spec"]["metrics"]
    job = metric["provider"]["job"]["spec"]["template"]["spec"]["containers"][0]
    hook = yaml.safe_load((root / "argo/presync-gate-job.yaml").read_text())
    assert hook["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    hook_args = hook["spec"]["template"]["spec"]["containers"][0]["args"]
    workflow = yaml.safe_load((root / "github/migrator-gate.yml").read_text())
    (step,) = [s for s in workflow["jobs"]["deploy"]["steps"] if "gate" in s.get("run", "")]
    step_args = step["run"].split()[1:]

    state = tmp_path / "lb"
    path = tmp_path / "plan.yaml"
    path.write_text(
        yaml.safe_dump(switch_plan(command_section(state, steps=[50, 100])).model_dump(mode="json"))
    )
    seed_users(fresh_db)
    runner = CliRunner()
    for args in (job["args"], hook_args, step_args):
        assert args[0] == "gate" and args[2:] == ["--for", "switch"]
        run = runner.invoke(app, [args[0], str(path), *args[2:], "--database-url", fresh_db])
        assert run.exit_code == ExitCode.REFUSED, run.output
        assert "has not been expanded" in run.output
