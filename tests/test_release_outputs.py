"""What a user reads of a real release, run phase by phase through the command line on the
embedded server: the JSON Lines of the verbs that stream (one object a line, the final
summary last, an error object when the verb fails), the one JSON document of the others,
and `status` in 80 columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migrator.errors import ExitCode
from tests.support.servers import Server

# Long names on purpose: `status` must show them whole in 80 columns.
RELEASE = "2026-12-customer-contact-preferences-phone-numbers-for-sms"
TABLE = "customer_contact_preferences"
COLUMN = "preferred_contact_phone_number"

PLAN = f"""
release: {RELEASE}
versions:
  old: {{name: v1, queries: queries/v1.sql}}
  new: {{name: v2, queries: queries/v2.sql}}
expand:
  - add_column:
      table: {TABLE}
      column: {{name: {COLUMN}, type: text}}
      up: "coalesce(legacy_phone, '')"
      final: {{nullable: false}}
backfill: {{batch_size: 40}}
switch:
  command:
    to_green: "echo {{percent}} > traffic"
    to_blue: "echo 0 > traffic"
    status: "cat traffic"
  watch: {{duration: 0, interval: 1}}
  steps: [50, 100]
contract:
  not_before: 0s
  operations:
    - drop_column: {{table: {TABLE}, column: legacy_phone}}
"""

SEED = (
    f"CREATE TABLE {TABLE} (id int PRIMARY KEY, name text NOT NULL, legacy_phone text);"
    f"INSERT INTO {TABLE} SELECT g, 'c' || g, 'p' || g FROM generate_series(1, 300) g"
)
V1 = f"SELECT id, name, legacy_phone FROM {TABLE} WHERE id = $1;\n"
V2 = f"SELECT id, name, {COLUMN} FROM {TABLE} WHERE id = $1;\n"


def migrator(
    *args: str, url: str, cwd: Path, columns: int | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command, as a user runs it (stdout a pipe, not a terminal)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATOR_")}
    env["MIGRATOR_DATABASE_URL"] = url
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-c", "from migrator.cli import main\nmain()\n", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of a streaming verb's stdout, each parsed alone as a JSON object."""
    lines = output.splitlines()
    assert lines, "no output"
    objects = [json.loads(line) for line in lines]
    assert all(isinstance(o, dict) and "event" in o for o in objects), objects
    return objects


def one_document(output: str) -> Any:
    """The whole stdout is one JSON document (it may span lines)."""
    return json.loads(output)


@dataclass
class Released:
    url: str
    folder: Path
    outputs: dict[str, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def released(pg_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Released]:
    """The release run phase by phase with --json, each phase's output kept."""
    folder = tmp_path_factory.mktemp("release")
    (folder / "queries").mkdir()
    (folder / "queries" / "v1.sql").write_text(V1)
    (folder / "queries" / "v2.sql").write_text(V2)
    (folder / "plan.yaml").write_text(PLAN)
    (folder / "traffic").write_text("0\n")
    url = pg_server.create_database("out")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED)
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    for verb, extra in (
        ("check", ["--scratch-url", pg_server.admin_url]),
        ("expand", []),
        ("switch", []),
        ("backfill", []),
        ("complete", []),
        ("contract", []),
    ):
        args = [verb] + (["plan.yaml"] if verb != "contract" else []) + [*extra, "--json"]
        done = migrator(*args, url=url, cwd=folder)
        assert done.returncode == 0, (verb, done.stdout, done.stderr)
        outputs[verb] = done
    yield Released(url, folder, outputs)
    pg_server.drop_database(url)


@pytest.mark.parametrize("verb", ["expand", "switch", "backfill", "complete", "contract"])
def test_streaming_verbs_write_json_lines_with_the_summary_last(
    released: Released, verb: str
) -> None:
    objects = json_lines(released.outputs[verb].stdout)
    *events, summary = objects
    assert summary["event"] == "result", summary
    assert all(e["event"] != "result" for e in events), events
    if verb == "contract":
        (contracted,) = summary["releases"]
        assert contracted["release"] == RELEASE and contracted["ran"]
    else:
        assert summary["release"] == RELEASE and summary["phase"]
    if verb in ("expand", "backfill"):
        assert any(e["event"] == "step" for e in events), events
    if verb == "backfill":
        assert summary["rows"] == 300


def test_check_status_and_gate_write_one_document(released: Released) -> None:
    report = one_document(released.outputs["check"].stdout)
    assert report["queries"] == {"old": 1, "new": 1}
    status = migrator("status", "--json", url=released.url, cwd=released.folder)
    assert status.returncode == 0, status.stderr
    (release,) = one_document(status.stdout)["releases"]
    assert release["name"] == RELEASE and release["phase"] == "contracted"
    gate = migrator(
        "gate", "plan.yaml", "--for", "contract", "--json", url=released.url, cwd=released.folder
    )
    assert gate.returncode == 0, gate.stderr
    assert one_document(gate.stdout)["ok"] is True
    validate = migrator(
        "plan", "validate", "plan.yaml", "plan.yaml", "--json", url="", cwd=released.folder
    )
    assert validate.returncode == 0, validate.stderr
    assert [p["valid"] for p in one_document(validate.stdout)["plans"]] == [True, True]


def test_a_streaming_verb_that_fails_ends_its_lines_with_the_error(released: Released) -> None:
    """A refusal still ends the stream with one final object, the error, whose exit code
    is the process's; the line on stderr stays."""
    refused = migrator("rollback", "plan.yaml", "--json", url=released.url, cwd=released.folder)
    assert refused.returncode == int(ExitCode.REFUSED), (refused.stdout, refused.stderr)
    *_, last = json_lines(refused.stdout)
    assert last["event"] == "error" and last["exit_code"] == int(ExitCode.REFUSED), last
    assert "contract" in last["message"]
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
