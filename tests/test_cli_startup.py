"""The command line at its edges: what start-up imports, Ctrl-C at any moment, output
into a closed pipe, --debug after the verb.

Each process test runs the CLI in a subprocess the way the console script does
(`from migrator.cli import main; main()`); times are measured in bench/startup.py, never
here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migrator.cli import CLOSED_PIPE, app
from migrator.errors import ExitCode

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "plans" / "2026-11-add-phone.yaml"
# Nothing listens on port 1 of loopback: a URL that fails at once.
NOWHERE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"

# The console script's two lines, after an optional hook.
ENTRY = "from migrator.cli import main\nmain()\n"


def _cli(code: str, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATOR_")}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=kwargs.pop("cwd", ROOT),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=kwargs.pop("stdout", subprocess.PIPE),
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def one_statement(tmp_path: Path) -> Path:
    sql = tmp_path / "one.sql"
    sql.write_text("ALTER TABLE users ADD COLUMN phone text;\n")
    return sql


# -- what start-up imports ------------------------------------------------------------------

HEAVY = {"sqlalchemy", "psycopg", "kubernetes", "boto3", "botocore", "httpx", "alembic"}


def _imported(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    """Run the CLI; the top-level packages it imported."""
    record = tmp_path / "modules.json"
    code = (
        "import json, sys\n"
        "from migrator.cli import main\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        f"    open({str(record)!r}, 'w').write(json.dumps(sorted(sys.modules)))\n"
    )
    proc = _cli(code, *args)
    _, errors = proc.communicate()
    assert proc.returncode in (0, 1), errors.decode()
    return proc.returncode, {name.split(".")[0] for name in json.loads(record.read_text())}


def test_help_imports_no_database_cloud_or_domain_library(tmp_path: Path) -> None:
    code, modules = _imported(tmp_path, "--help")
    assert code == 0
    # Not even what a verb's own work needs (plan models, the SQL parser, rich).
    unwanted = HEAVY | {"pglast", "pydantic", "yaml", "rich"}
    assert not modules & unwanted, modules & unwanted


def test_plan_validate_imports_no_database_or_cloud_library(tmp_path: Path) -> None:
    code, modules = _imported(tmp_path, "plan", "validate", str(PLAN))
    assert code == 0
    assert "pydantic" in modules  # the plan was really loaded
    assert not modules & HEAVY, modules & HEAVY


def test_lint_of_a_file_imports_no_database_or_cloud_library(
    tmp_path: Path, one_statement: Path
) -> None:
    code, modules = _imported(tmp_path, "lint", "--sql", str(one_statement))
    assert code == int(ExitCode.FINDINGS)  # the statement takes a lock without lock_timeout
    assert "pglast" in modules  # the statement was really parsed
    assert not modules & HEAVY, modules & HEAVY
    # Nor the plan models and the operations: a SQL file has no plan.
    loaded = set(json.loads((tmp_path / "modules.json").read_text()))
    assert not loaded & {"migrator.plan.models", "migrator.ops"}, loaded


# -- Ctrl-C at any moment -------------------------------------------------------------------


def _hold_at_import(module: str) -> str:
    """Code that, when ``module`` is first imported, says so on stdout and waits for a
    signal there, in the middle of the import."""
    return (
        "import signal, sys\n"
        "class Hold:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            sys.meta_path.remove(self)\n"
        "            print('importing', name, flush=True)\n"
        "            signal.pause()\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hold())\n"
    )


@pytest.mark.parametrize(
    ("args", "module", "stop"),
    [
        # Start-up: the app is being built, no verb is running yet.
        (["--help"], "typer", signal.SIGINT),
        (["plan", "validate", str(PLAN)], "typer", signal.SIGTERM),
        # A verb importing what it needs: the plan loader, the lint's parser.
        (["plan", "validate", str(PLAN)], "yaml", signal.SIGINT),
        (["lint", "--sql", "ONE"], "pglast", signal.SIGINT),
        (["lint", "--sql", "ONE"], "pglast", signal.SIGTERM),
    ],
)
def test_interrupted_anywhere_is_one_line_and_exit_5(
    args: list[str], module: str, stop: signal.Signals, one_statement: Path
) -> None:
    args = [str(one_statement) if a == "ONE" else a for a in args]
    proc = _cli(_hold_at_import(module) + ENTRY, *args)
    assert proc.stdout is not None
    marker = proc.stdout.readline()  # blocks until the import is under way
    assert marker.decode().strip() == f"importing {module}", marker
    proc.send_signal(stop)
    _, errors = proc.communicate(timeout=60)
    text = errors.decode()
    assert proc.returncode == int(ExitCode.INTERRUPTED), text
    assert "Traceback" not in text
    assert text.count("\n") == 1 and text.startswith("error: interrupted"), text


# -- output into a closed pipe --------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "schema"],
        ["plan", "validate", str(PLAN), "--json"],
        ["lint", "--sql", "ONE", "--format", "json"],
        ["lint", "--sql", "ONE"],
        ["--help"],
        ["--version"],
    ],
)
def test_closed_pipe_ends_quietly_with_the_pipes_status(
    args: list[str], one_statement: Path
) -> None:
    args = [str(one_statement) if a == "ONE" else a for a in args]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte: every write fails
    try:
        proc = _cli(ENTRY, *args, stdout=write)
    finally:
        os.close(write)
    _, errors = proc.communicate(timeout=120)
    assert errors.decode() == ""
    assert proc.returncode == CLOSED_PIPE


def test_open_pipe_gets_everything() -> None:
    # The same command into a reader that stays: the whole schema, exit 0.
    proc = _cli(ENTRY, "plan", "schema")
    out, errors = proc.communicate(timeout=120)
    assert proc.returncode == 0, errors.decode()
    assert json.loads(out)["title"] == "migrator release plan"


# -- --debug before or after the verb -------------------------------------------------------


def _bad_plan(tmp_path: Path) -> Path:
    plan = tmp_path / "bad.yaml"
    plan.write_text("release: r\nexpand:\n  - add_colum: {table: t}\n")
    return plan


@pytest.mark.parametrize("where", ["before", "after", "none"])
def test_debug_before_or_after_the_verb(tmp_path: Path, where: str) -> None:
    plan = str(_bad_plan(tmp_path))
    args = {
        "before": ["--debug", "plan", "validate", plan],
        "after": ["plan", "validate", plan, "--debug"],
        "none": ["plan", "validate", plan],
    }[where]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == int(ExitCode.BAD_INPUT), result.output
    assert "unknown operation 'add_colum'" in result.output
    assert ("Traceback" in result.output) == (where != "none"), result.output


def test_debug_after_a_database_verb() -> None:
    args = ["expand", str(PLAN), "--database-url", NOWHERE]
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == int(ExitCode.RUNTIME)
    assert "Traceback" not in plain.output and "127.0.0.1" in plain.output
    debug = CliRunner().invoke(app, [*args, "--debug"])
    assert debug.exit_code == int(ExitCode.RUNTIME)
    assert "Traceback" in debug.output and "127.0.0.1" in debug.output


def test_help_lists_each_verb_with_its_whole_first_line() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    listing = " ".join(result.output.split())
    assert "expand Add what the new version needs; nothing the old version uses changes." in (
        listing
    )
    assert listing.count("...") == 1  # `COMMAND [ARGS]...`: no line is cut
    assert "--debug" in listing
