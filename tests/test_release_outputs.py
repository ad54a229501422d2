"""What a user reads of a real release, run phase by phase through the command line on the
embedded server: the JSON Lines of the verbs that stream (one object a line, the final
summary last, an error object when the verb fails), the one JSON document of the others,
and `status` in 80 columns."""

from __future__ import annotations

import json
import os
import shutil
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
backfill: {{batch_size: 40, pause: 300ms}}
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


def _whole_names_in(output: str, names: list[str], width: int) -> None:
    """Every line fits the width, and each name stands whole on one line."""
    lines = output.splitlines()
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, too_long
    for name in names:
        assert any(name in line for line in lines), (name, output)


def test_status_reads_whole_in_80_columns(released: Released) -> None:
    shown = migrator("status", url=released.url, cwd=released.folder, columns=80)
    assert shown.returncode == 0, shown.stderr
    keys = [
        st["key"]
        for st in json.loads(
            migrator("status", "--json", url=released.url, cwd=released.folder).stdout
        )["releases"][0]["steps"]
    ]
    assert any(TABLE in key for key in keys) or keys, keys
    _whole_names_in(shown.stdout, [RELEASE, *keys, "300 rows filled of ~300"], 80)
    assert "switch.traffic" in shown.stdout and "green 0% -> 50%" in shown.stdout, shown.stdout


def test_status_after_kill_9_shows_the_rows_actually_filled(fresh_db: str, tmp_path: Path) -> None:
    """A backfill killed mid-way (no checkpoint written on the way out) is shown as
    interrupted, with the rows its committed batches filled, counted in the table."""
    from migrator import commands
    from migrator.plan.loader import load_plan

    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "v1.sql").write_text(V1)
    (tmp_path / "queries" / "v2.sql").write_text(V2)
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(
        PLAN.replace("batch_size: 40, pause: 300ms", "batch_size: 10, pause: 100ms")
    )
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(SEED)
    commands.expand(load_plan(plan_path), commands.Options(database_url=fresh_db))

    def filled() -> int:
        with psycopg.connect(fresh_db) as conn:
            row = conn.execute(f"SELECT count({COLUMN}) FROM {TABLE}").fetchone()
            return int(row[0]) if row else 0

    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATOR_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from migrator.cli import main\nmain()\n", "backfill", "plan.yaml"],
        cwd=tmp_path,
        env={**env, "MIGRATOR_DATABASE_URL": fresh_db},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while filled() < 30:  # three batches committed: the event the kill waits for
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait(timeout=60)
    rows = filled()
    assert 30 <= rows < 300
    shown = migrator("status", url=fresh_db, cwd=tmp_path, columns=80)
    assert shown.returncode == 0, shown.stderr
    _whole_names_in(shown.stdout, [RELEASE, f"{rows} rows filled of ~300"], 80)
    assert "interrupted: rerun to resume" in shown.stdout, shown.stdout
    as_json = json.loads(migrator("status", "--json", url=fresh_db, cwd=tmp_path).stdout)
    assert as_json["migrator_running"] is False
    (step,) = [st for st in as_json["releases"][0]["steps"] if st["phase"] == "backfill"]
    assert step["interrupted"] is True and step["filled"]["rows"] == rows


CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Debian's Chromium, headless, with its own profile and no network of its own."""
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # tests may run as root, where the sandbox refuses to start
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={cwd / 'chromium-profile'}",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_report_is_one_page_that_draws_in_chromium(released: Released) -> None:
    page = released.folder / "release.html"
    made = migrator("report", "-o", str(page), url=released.url, cwd=released.folder)
    assert made.returncode == 0, made.stderr
    html = page.read_text()
    # Self-contained: nothing to fetch, nothing to run.
    assert "<script" not in html.lower()
    for fetch in ("src=", "href=", "@import", "url("):
        assert fetch not in html, fetch
    assert RELEASE in html
    for phase in ("check", "expand", "switch", "backfill", "complete", "contract"):
        assert f">{phase}</text>" in html, phase
    assert "traffic to 50% green" in html and "watched at 100% green" in html
    assert "rows/s" in html and "300 rows filled of ~300" in html
    assert "traffic-off-blue" in html and "not_before" in html
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian's package: apt-get install chromium)")
    dom = _chromium("--dump-dom", page.as_uri(), cwd=released.folder)
    assert dom.returncode == 0, dom.stderr
    # The DOM Chromium built holds the drawings: three charts, bars, lines and marks.
    assert dom.stdout.count("<svg") == 3, dom.stdout[:2000]
    assert dom.stdout.count("<rect") >= 10 and "<path" in dom.stdout and "<circle" in dom.stdout
    shot = released.folder / "shot.png"
    taken = _chromium(
        f"--screenshot={shot}", "--window-size=1000,900", page.as_uri(), cwd=released.folder
    )
    assert taken.returncode == 0 and shot.exists(), taken.stderr
    _assert_drawn(shot.read_bytes())


def _assert_drawn(png: bytes) -> None:
    """The screenshot is not blank: its pixels take many colours, the phases' among them."""
    import struct
    import zlib

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = data
        elif kind == b"IDAT":
            chunks.append(data)
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    # Undo the PNG row filters to read real pixels.
    rows: list[bytearray] = []
    previous = bytearray(stride)
    pos = 0
    for _ in range(height):
        kind, line = raw[pos], bytearray(raw[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        previous = line
    # Every pixel: a short phase's bar is a few pixels wide.
    colours = {bytes(row[x : x + 3]) for row in rows for x in range(0, stride, channels)}
    assert len(colours) > 20, len(colours)
    # The expand bar's blue (#2f80ed) and the backfill's orange (#f2994a) are drawn.
    assert bytes.fromhex("2f80ed") in colours and bytes.fromhex("f2994a") in colours


def test_release_json_is_lines_with_the_summary_last(
    fresh_db: str, pg_server: Server, tmp_path: Path
) -> None:
    """`release --json` streams every phase's events, its warnings among them (a plan
    without versions: skips the query check), and ends with its one summary."""
    (tmp_path / "plan.yaml").write_text(
        "release: r-lines\nexpand:\n"
        "  - add_column: {table: customer_contact_preferences, "
        "column: {name: nickname, type: text}}\n"
    )
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(SEED)
    # The check's scratch copies go to the test server (no embedded server of its own).
    done = migrator(
        "release",
        "plan.yaml",
        "--json",
        "--scratch-url",
        pg_server.admin_url,
        url=fresh_db,
        cwd=tmp_path,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    *events, summary = json_lines(done.stdout)
    assert summary["event"] == "result" and summary["release"] == "r-lines", summary
    assert all(e["event"] != "result" for e in events)
    assert any(
        e["event"] == "warning" and "skipped the query check" in e["message"] for e in events
    ), events
