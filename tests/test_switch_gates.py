"""Gates of the switch (expand applied, check passed for this plan's hash, --force with
a recorded reason), the rollback and complete gates, the audit log, and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from migrator import commands
from migrator.cli import app
from migrator.commands.release import phase_order
from migrator.commands.release import release as run_release
from migrator.commands.session import STATE
from migrator.db.connection import connect, make_engine
from migrator.errors import ExitCode, GateRefused
from migrator.observer import Observer
from migrator.plan.models import Plan
from migrator.switch import SmokeFailed
from tests.support.switch_env import (
    command_section,
    free_port,
    phase,
    ready_release,
    record_check,
    seed_users,
    switch_plan,
    traffic_events,
)


def _events(url: str, release: str) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        with connect(engine) as conn:
            return STATE.events(conn, release)
    finally:
        engine.dispose()


def _columns(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users' "
            "ORDER BY ordinal_position"
        ).fetchall()
    return [r[0] for r in rows]


def test_switch_before_expand_is_refused_and_moves_nothing(fresh_db: str, tmp_path: Path) -> None:
    state = tmp_path / "lb"
    plan = switch_plan(command_section(state))
    seed_users(fresh_db)
    opts = commands.Options(database_url=fresh_db, actor="tester@test")
    commands.init(opts)
    record_check(fresh_db, plan)
    with pytest.raises(GateRefused) as refused:
        commands.switch(plan, opts)
    assert refused.value.exit_code == ExitCode.REFUSED
    assert "has not been expanded; run `migrator expand` first" in str(refused.value)
    assert state.read_text() == "0\n"


def test_switch_without_a_passing_check_for_this_plan_is_refused(
    fresh_db: str, tmp_path: Path
) -> None:
    state = tmp_path / "lb"
    plan = switch_plan(command_section(state))
    opts = ready_release(fresh_db, plan, check=False)
    with pytest.raises(GateRefused, match=r"`migrator check` has not run for this plan"):
        commands.switch(plan, opts)
    # A check of another plan (another hash) does not count.
    other = switch_plan(command_section(state, steps=[50, 100]))
    record_check(fresh_db, other)
    with pytest.raises(GateRefused, match=r"has not run for this plan"):
        commands.switch(plan, opts)
    # The latest verdict for this hash counts: passed, then failed, is failed.
    record_check(fresh_db, plan, "check.passed")
    record_check(fresh_db, plan, "check.failed")
    with pytest.raises(GateRefused, match=r"`migrator check` failed for this plan"):
        commands.switch(plan, opts)
    assert state.read_text() == "0\n"
    assert traffic_events(fresh_db, plan.release) == []
    # A check run with --no-lint proved the queries but not the lock safety.
    record_check(fresh_db, plan, "check.passed", lint_available=False)
    with pytest.raises(GateRefused, match=r"passed for this plan without its lint"):
        commands.switch(plan, opts)
    assert state.read_text() == "0\n"
    record_check(fresh_db, plan, "check.passed", lint_available=True)
    commands.switch(plan, opts)
    assert state.read_text() == "100\n"


def test_force_skips_the_gates_and_records_the_reason(fresh_db: str, tmp_path: Path) -> None:
    state = tmp_path / "lb"
    plan = switch_plan(command_section(state))
    opts = ready_release(fresh_db, plan, check=False)
    opts.force, opts.force_reason = True, "check is down; verified by hand, INC-123"
    commands.switch(plan, opts)
    assert state.read_text() == "100\n"
    forced = [e for e in _events(fresh_db, plan.release) if e["action"] == "switch.forced"]
    assert len(forced) == 1
    assert forced[0]["details"]["reason"] == "check is down; verified by hand, INC-123"
    assert "`migrator check` has not run" in forced[0]["details"]["skipped"][0]


def test_every_traffic_change_is_recorded_with_who_when_from_to_and_backend(
    fresh_db: str, tmp_path: Path
) -> None:
    state = tmp_path / "lb"
    plan = switch_plan(command_section(state, steps=[20, 100]))
    opts = ready_release(fresh_db, plan)
    commands.switch(plan, opts, step=1)
    assert phase(fresh_db, plan.release) == "switching"
    commands.switch(plan, opts)  # resumes: only the steps above the current split
    assert phase(fresh_db, plan.release) == "switched"
    commands.switch(plan, opts, to="blue")
    assert phase(fresh_db, plan.release) == "expanded"
    events = traffic_events(fresh_db, plan.release)
    assert [(e["details"]["from"], e["details"]["to"], e["details"]["reason"]) for e in events] == [
        ({"blue": 100, "green": 0}, {"blue": 80, "green": 20}, "step 1/2"),
        ({"blue": 80, "green": 20}, {"blue": 0, "green": 100}, "step 2/2"),
        ({"blue": 0, "green": 100}, {"blue": 100, "green": 0}, "switch --to blue"),
    ]
    for e in events:
        assert e["actor"] == "tester@test"
        assert e["plan_hash"] == plan.digest()
        assert e["details"]["backend"].startswith("shell commands")
    stamps = [e["at"] for e in events]
    assert stamps == sorted(stamps) and stamps[0].tzinfo is not None


def test_rollback_moves_traffic_first_and_the_schema_only_when_none_is_on_green(
    fresh_db: str, tmp_path: Path
) -> None:
    state = tmp_path / "lb"
    plan = switch_plan(command_section(state))
    opts = ready_release(fresh_db, plan)
    commands.switch(plan, opts)
    assert "phone" in _columns(fresh_db)

    first = commands.rollback(plan, opts)
    assert state.read_text() == "0\n"
    assert "phone" in _columns(fresh_db)  # the old version works with the expanded schema
    assert first.ran == ["traffic 100% green -> 0% green via " + first.ran[0].split(" via ")[1]]

    second = commands.rollback(plan, opts)
    assert "phone" not in _columns(fresh_db)
    assert second.ran and phase(fresh_db, plan.release) == "rolled_back"


def test_rollback_is_refused_once_the_contract_has_run(fresh_db: str, tmp_path: Path) -> None:
    state = tmp_path / "lb"
    plan = switch_plan(command_section(state))
    opts = ready_release(fresh_db, plan)
    commands.switch(plan, opts)
    engine = make_engine(fresh_db)
    with connect(engine) as conn:
        STATE.set_phase(conn, plan.release, "contracted")
        conn.commit()
    engine.dispose()
    with pytest.raises(GateRefused) as refused:
        commands.rollback(plan, opts)
    assert "contract has run" in str(refused.value)
    assert "the old version could no longer work" in str(refused.value)
    assert refused.value.exit_code == ExitCode.REFUSED
    assert state.read_text() == "100\n"


def test_complete_is_refused_until_all_traffic_is_on_green(fresh_db: str, tmp_path: Path) -> None:
    state = tmp_path / "lb"
    plan = switch_plan(command_section(state, steps=[50, 100]))
    opts = ready_release(fresh_db, plan)
    with pytest.raises(GateRefused, match=r"traffic is blue 100% / green 0%"):
        commands.complete(plan, opts)
    commands.switch(plan, opts, step=1)
    with pytest.raises(GateRefused, match=r"blue 50% / green 50%.*run `migrator switch`"):
        commands.complete(plan, opts)
    commands.switch(plan, opts)
    commands.complete(plan, opts)
    assert phase(fresh_db, plan.release) == "completed"


def _write(tmp_path: Path, plan_data: dict[str, Any]) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan_data, sort_keys=False))
    return path


def test_cli_switch_exit_codes(fresh_db: str, tmp_path: Path) -> None:
    state = tmp_path / "lb"
    data = {
        "release": "r-cli",
        "expand": [{"add_column": {"table": "users", "column": {"name": "phone", "type": "text"}}}],
        "switch": command_section(state),
    }
    path = _write(tmp_path, data)
    runner = CliRunner()
    seed_users(fresh_db)
    url = ["--database-url", fresh_db]
    assert runner.invoke(app, ["expand", str(path), *url]).exit_code == 0

    refused = runner.invoke(app, ["switch", str(path), *url])
    assert refused.exit_code == ExitCode.REFUSED, refused.output
    assert "migrator check" in refused.output

    no_reason = runner.invoke(app, ["switch", str(path), *url, "--force"])
    assert no_reason.exit_code == ExitCode.BAD_INPUT
    bad_step = runner.invoke(
        app, ["switch", str(path), *url, "--step", "2", "--force", "--reason", "x"]
    )
    assert bad_step.exit_code == ExitCode.BAD_INPUT and "--step takes 1..1" in bad_step.output

    from migrator.plan.loader import load_plan

    record_check(fresh_db, load_plan(path))
    done = runner.invoke(app, ["switch", str(path), *url, "--json"])
    assert done.exit_code == 0, done.output
    assert '"after": {"blue": 0, "green": 100}' in done.output
    assert state.read_text() == "100\n"
    rehearsal = runner.invoke(app, ["rollback", str(path), *url, "--dry-run"])
    assert rehearsal.exit_code == 0, rehearsal.output
    assert "would move all traffic to blue" in rehearsal.output
    assert "✓" not in rehearsal.output  # nothing moved, and it does not say so
    assert state.read_text() == "100\n"
    back = runner.invoke(app, ["rollback", str(path), *url])
    assert back.exit_code == 0, back.output
    assert "✓ traffic 100% green -> 0% green" in back.output
    assert state.read_text() == "0\n"


def test_plan_without_switch_section_is_a_usage_error(fresh_db: str) -> None:
    from migrator.errors import UsageError
    from migrator.plan.models import Plan

    plan = Plan.model_validate({"release": "r"})
    with pytest.raises(UsageError, match="has no switch: section"):
        commands.switch(plan, commands.Options(database_url=fresh_db))


def test_back_to_blue_needs_no_passing_check(fresh_db: str, tmp_path: Path) -> None:
    state = tmp_path / "lb"
    plan = switch_plan(command_section(state))
    opts = ready_release(fresh_db, plan)
    commands.switch(plan, opts)
    record_check(fresh_db, plan, "check.failed")  # a later check found a problem
    with pytest.raises(GateRefused, match="`migrator check` failed"):
        commands.switch(plan, opts)
    commands.switch(plan, opts, to="blue")
    assert state.read_text() == "0\n"


def test_switch_waits_for_the_copy_a_renamed_column_needs(fresh_db: str, tmp_path: Path) -> None:
    state = tmp_path / "lb"
    plan = Plan.model_validate(
        {
            "release": "r-rename",
            "expand": [{"rename_column": {"table": "users", "from": "name", "to": "full_name"}}],
            "switch": command_section(state),
        }
    )
    opts = ready_release(fresh_db, plan)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 50) g")
    with pytest.raises(GateRefused) as refused:
        commands.switch(plan, opts)
    assert refused.value.exit_code == ExitCode.REFUSED
    assert (
        "backfill not done: copy users.name to full_name; the new version reads the new name"
        in str(refused.value)
    )
    assert state.read_text() == "0\n"
    assert traffic_events(fresh_db, plan.release) == []
    commands.backfill(plan, opts)
    commands.switch(plan, opts)
    assert state.read_text() == "100\n"
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE full_name IS NULL").fetchone() == (0,)


def test_release_fills_a_renamed_column_before_the_switch() -> None:
    rename = {"rename_column": {"table": "users", "from": "name", "to": "full_name"}}
    add = {"add_column": {"table": "users", "column": {"name": "phone", "type": "text"}}}
    switch = {"command": {"to_green": "true", "to_blue": "true"}}
    order = [
        phase_order(Plan.model_validate({"release": "r", "expand": ops, "switch": switch}))
        for ops in ([add], [add, rename])
    ]
    assert order == [
        ["check", "expand", "switch", "backfill", "complete"],
        ["check", "expand", "backfill", "switch", "complete"],
    ]


def test_release_says_what_it_did_not_verify(fresh_db: str, tmp_path: Path) -> None:
    """A plan with no versions: and a switch with no smoke test and no watch probes: the
    release goes through, and the CLI says that no query and nothing on green was checked."""
    state = tmp_path / "lb"
    data = {
        "release": "r-unverified",
        "expand": [{"add_column": {"table": "users", "column": {"name": "phone", "type": "text"}}}],
        "switch": command_section(state),
    }
    path = _write(tmp_path, data)
    seed_users(fresh_db)
    from migrator.plan.loader import load_plan

    record_check(fresh_db, load_plan(path))
    done = CliRunner().invoke(app, ["release", str(path), "--database-url", fresh_db])
    assert done.exit_code == 0, done.output
    assert (
        "warning: release r-unverified: skipped the query check: the plan has no versions:"
        in done.output
    )
    assert (
        "warning: switch of r-unverified: nothing is verified: the plan has no switch.smoke "
        "tests and no switch.watch.probes" in done.output
    )
    assert state.read_text() == "100\n"
    # With one version's query set named, only the other is said to be unchecked; with a
    # smoke test (here one green fails), the switch does not say nothing was verified.
    data = {
        **data,
        "release": "r-verified",
        "after": "r-unverified",
        "expand": [{"add_column": {"table": "users", "column": {"name": "fax", "type": "text"}}}],
        "versions": {"old": {"name": "v1", "queries": "q.sql"}, "new": {"name": "v2"}},
        "switch": command_section(
            state, smoke=[{"http": {"url": f"http://127.0.0.1:{free_port()}/"}}]
        ),
    }
    plan = Plan.model_validate(data)
    record_check(fresh_db, plan)
    rec = _Warnings()
    opts = commands.Options(database_url=fresh_db, actor="tester@test", observer=rec)
    with pytest.raises(SmokeFailed):
        run_release(plan, tmp_path / "plan.yaml", opts)
    assert rec.warnings[0] == (
        "release r-verified: skipped the query check of the new version: the plan has no "
        "versions.new.queries"
    )
    assert not any("nothing is verified" in w for w in rec.warnings)
    assert state.read_text() == "0\n"


class _Warnings(Observer):
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)
