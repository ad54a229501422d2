"""The config file: option defaults below flags and MIGRATOR_* variables, with every
mistake named at its file, line and column."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from migrator.cli import app
from migrator.cli.config import default_map, read_config
from migrator.errors import ExitCode, UsageError

# Nothing listens on port 1 of loopback: a URL that fails at once, naming its host.
NOWHERE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


def _status(runner: CliRunner, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "status"])
    return result.exit_code, result.output


def test_file_then_environment_then_flag(
    fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIGRATOR_DATABASE_URL", raising=False)
    monkeypatch.delenv("MIGRATOR_CONFIG", raising=False)
    runner = CliRunner()
    code, output = _status(runner)
    assert code == ExitCode.BAD_INPUT and "database_url in migrator.yaml" in output

    (tmp_path / "migrator.yaml").write_text(f"database_url: {fresh_db}\n")
    code, output = _status(runner)
    assert code == 0, output
    assert "no releases" in output

    # The variable comes before the file...
    monkeypatch.setenv("MIGRATOR_DATABASE_URL", NOWHERE)
    code, output = _status(runner)
    assert code == ExitCode.RUNTIME and "127.0.0.1" in output, output
    # ...and the flag before both.
    result = runner.invoke(app, ["status", "--database-url", fresh_db])
    assert result.exit_code == 0, result.output


def test_config_named_by_flag_or_variable(
    fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIGRATOR_DATABASE_URL", raising=False)
    elsewhere = tmp_path / "conf" / "prod.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(f"# the release database\ndatabase_url: '{fresh_db}'\n")
    runner = CliRunner()
    code, output = _status(runner, "--config", str(elsewhere))
    assert code == 0, output
    monkeypatch.setenv("MIGRATOR_CONFIG", str(elsewhere))
    code, output = _status(runner)
    assert code == 0, output
    monkeypatch.setenv("MIGRATOR_CONFIG", str(tmp_path / "missing.yaml"))
    code, output = _status(runner)
    assert code == ExitCode.BAD_INPUT and "missing.yaml does not exist" in output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "database_url: x\ndatabse_url: y\n",
            "c.yaml:2:1: unknown key 'databse_url' (did you mean 'database_url'?)",
        ),
        ("scratch_url: 5432\n", "c.yaml:1:14: scratch_url takes a string"),
        ("database_url: [a, b]\n", "c.yaml:1:15: database_url takes a string"),
        ("- database_url: x\n", "c.yaml:1:1: a config file is a map of option: value"),
        ("database_url: 'x\n", "c.yaml:2:1: invalid YAML"),
        (
            "lint:\n\tdisable: [M041]\n",
            "c.yaml:2:1: invalid YAML: found character '\\t' that cannot start any token "
            "(while scanning for the next token); indent with spaces: YAML does not allow tabs",
        ),
    ],
)
def test_mistakes_are_named_at_file_line_column(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        read_config(path)
    assert str(err.value).startswith(f"{tmp_path}/{message}"), str(err.value)


def test_cli_exits_2_on_a_bad_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "migrator.yaml").write_text("database-url: x\n")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "migrator.yaml:1:1: unknown key 'database-url'" in result.output


def test_an_empty_file_sets_nothing(tmp_path: Path) -> None:
    path = tmp_path / "migrator.yaml"
    path.write_text("# nothing yet\n")
    assert read_config(path) == {}


def test_only_options_that_read_the_variable_take_the_file() -> None:
    """render and queries capture ignore MIGRATOR_DATABASE_URL on purpose (they would read
    production); the file must not hand them the URL either."""
    defaults = default_map(typer.main.get_command(app), {"database_url": "u", "scratch_url": "s"})
    assert defaults["status"] == {"database_url": "u"}
    assert defaults["backfill"] == {"database_url": "u"}
    assert defaults["check"] == {"database_url": "u", "scratch_url": "s"}
    assert defaults["render"] == {"scratch_url": "s"}
    assert "capture" not in defaults.get("queries", {})


# -- lint: the project's rule settings -----------------------------------------------------

# M001 (an error) on line 2; M041 (optional, off by default) on line 3 when enabled.
MIGRATION = (
    "SET lock_timeout = '1s';\n"
    "CREATE INDEX users_email ON users (email);\n"
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS a text;\n"
)


def _lint(tmp_path: Path, config: str | None, *args: str) -> tuple[int, str]:
    sql = tmp_path / "m.sql"
    sql.write_text(MIGRATION)
    path = tmp_path / "migrator.yaml"
    if config is not None:
        path.write_text(config)
    options = ["--config", str(path)] if config is not None else []
    result = CliRunner().invoke(app, [*options, "lint", "--sql", str(sql), *args])
    return result.exit_code, result.output


def test_lint_settings_disable_warn_error_enable(tmp_path: Path) -> None:
    code, output = _lint(tmp_path, None)
    assert code == ExitCode.FINDINGS and "m.sql:2:1: error M001" in output, output
    assert "M041" not in output
    # disable: the rule's findings are gone, the run is clean.
    code, output = _lint(tmp_path, "lint:\n  disable: [M001]\n")
    assert code == 0 and "M001" not in output and "0 errors, 0 warnings" in output, output
    # warn: still reported, as a warning, so --fail-on error passes.
    code, output = _lint(tmp_path, "lint: {warn: [M001]}\n", "--fail-on", "error")
    assert code == 0 and "m.sql:2:1: warning M001" in output, output
    # error: a warning rule (M041, enabled) becomes an error that fails --fail-on error.
    code, output = _lint(
        tmp_path, "lint: {disable: [M001], enable: [M041]}\n", "--fail-on", "error"
    )
    assert code == 0 and "m.sql:3:1: warning M041" in output, output
    code, output = _lint(
        tmp_path, "lint: {disable: [M001], enable: [M041], error: [M041]}\n", "--fail-on", "error"
    )
    assert code == ExitCode.FINDINGS and "m.sql:3:1: error M041" in output, output


def test_lint_settings_apply_to_the_lint_of_check(tmp_path: Path) -> None:
    from migrator.commands.check import _lint as check_lint
    from migrator.lint import RuleSettings
    from migrator.plan.loader import load_plan

    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(
        "release: r1\nexpand:\n"
        "  - sql:\n      expand: CREATE INDEX users_email ON users (email)\n"
        "      rollback: DROP INDEX users_email\n"
    )
    plan = load_plan(plan_path)
    rules = {f.rule: f.severity for f in check_lint(plan, plan_path, 180000, None, RuleSettings())}
    assert rules.get("M001") == "error", rules
    quiet = check_lint(plan, plan_path, 180000, None, RuleSettings(disable=frozenset({"M001"})))
    assert "M001" not in {f.rule for f in quiet}
    warned = check_lint(plan, plan_path, 180000, None, RuleSettings(severity={"M001": "warning"}))
    assert {f.rule: f.severity for f in warned}.get("M001") == "warning"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lint:\n  disable: [M001, M999]\n", "migrator.yaml:2:19: lint.disable: no lint rule M999"),
        ("lint: {warn: [M01]}\n", "migrator.yaml:1:15: lint.warn: no lint rule M01"),
        ("lint: {enable: [M001]}\n", "migrator.yaml:1:17: lint.enable: M001 always applies"),
        (
            "lint: {warn: [M001], error: [M001]}\n",
            "migrator.yaml:1:30: lint.error: M001 is already in lint.warn",
        ),
        ("lint: {ignore: [M001]}\n", "migrator.yaml:1:8: unknown lint key 'ignore'"),
        ("lint: {warn: M001}\n", "migrator.yaml:1:14: lint.warn takes a list of rule ids"),
    ],
)
def test_a_bad_lint_setting_is_one_line_at_file_line_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIGRATOR_CONFIG", raising=False)
    (tmp_path / "migrator.yaml").write_text(text)
    (tmp_path / "m.sql").write_text(MIGRATION)
    proc = subprocess.run(
        [sys.executable, "-m", "migrator", "lint", "--sql", "m.sql"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_pg_version_key_sets_the_lint_version_and_is_checked_where_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIGRATOR_PG_VERSION", raising=False)
    monkeypatch.delenv("MIGRATOR_CONFIG", raising=False)
    (tmp_path / "one.sql").write_text("SET lock_timeout = '1s';\nSELECT 1;\n")
    runner = CliRunner()
    (tmp_path / "migrator.yaml").write_text("pg_version: 15.4\n")
    result = runner.invoke(app, ["lint", "one.sql"])
    assert result.exit_code == 0, result.output
    assert "(PostgreSQL 15)" in result.output
    # The variable and the flag come before the file.
    monkeypatch.setenv("MIGRATOR_PG_VERSION", "16")
    assert "(PostgreSQL 16)" in runner.invoke(app, ["lint", "one.sql"]).output
    result = runner.invoke(app, ["lint", "one.sql", "--pg-version", "17"])
    assert "(PostgreSQL 17)" in result.output
    monkeypatch.delenv("MIGRATOR_PG_VERSION")
    (tmp_path / "migrator.yaml").write_text("# project\npg_version: fifteen\n")
    result = runner.invoke(app, ["lint", "one.sql"])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "migrator.yaml:2:13: pg_version takes a PostgreSQL version" in result.output
