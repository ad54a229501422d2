"""`migrator db start|url|status|stop`, run as a user runs them: real subprocesses, a real
server, a real connection."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def migrator(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "migrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: as root the server runs as another user, who must reach the
    # folder through its parents, and every pytest run that starts resets its own root
    # (/tmp/pytest-of-USER) to 0700, so a second run on the machine would lock it out.
    folder = Path(tempfile.mkdtemp(prefix="migrator-db-test-"))
    folder.chmod(0o755)
    yield folder
    # Whatever a test left running stops with it.
    migrator("db", "stop", cwd=folder)
    shutil.rmtree(folder, ignore_errors=True)


def test_start_url_stop_start_keeps_the_data(workdir: Path) -> None:
    port = free_port()
    started = migrator("db", "start", "--port", str(port), cwd=workdir)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    assert url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
    assert (workdir / ".migrator" / "db" / "pgdata" / "PG_VERSION").is_file()

    asked = migrator("db", "url", cwd=workdir)
    assert (asked.returncode, asked.stdout.strip()) == (0, url)
    running = migrator("db", "status", cwd=workdir)
    assert running.returncode == 0 and running.stdout.startswith(f"running: {url}")

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE practice (id int PRIMARY KEY)")
        conn.execute("INSERT INTO practice VALUES (7)")

    stopped = migrator("db", "stop", cwd=workdir)
    assert (stopped.returncode, stopped.stdout.split(":")[0]) == (0, "stopped")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5).close()
    after = migrator("db", "status", cwd=workdir)
    assert after.returncode == 3 and after.stdout.startswith("stopped:")
    gone = migrator("db", "url", cwd=workdir)
    assert gone.returncode == 3 and "no practice database runs there" in gone.stderr

    again = migrator("db", "start", "--port", str(port), cwd=workdir)
    assert (again.returncode, again.stdout.strip()) == (0, url), again.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT id FROM practice").fetchall() == [(7,)]


def test_dir_option_and_refusals(workdir: Path) -> None:
    folder = workdir / "elsewhere"
    port = free_port()
    started = migrator("db", "start", "--dir", str(folder), "--port", str(port), cwd=workdir)
    assert started.returncode == 0, started.stderr
    try:
        # The same folder again: one line, exit 2, the first server untouched.
        twice = migrator(
            "db", "start", "--dir", str(folder), "--port", str(free_port()), cwd=workdir
        )
        assert twice.returncode == 2
        assert twice.stderr.count("\n") == 1 and "already runs there" in twice.stderr

        # Another folder on the port in use: one line, exit 4, nothing created.
        other = workdir / "other"
        clash = migrator("db", "start", "--dir", str(other), "--port", str(port), cwd=workdir)
        assert clash.returncode == 4
        assert clash.stderr.count("\n") == 1 and f"port {port}" in clash.stderr
        assert not other.exists()

        with psycopg.connect(started.stdout.strip()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

        # Asked without --dir, from the working directory: the refusal says what to pass.
        lost = migrator("db", "url", cwd=workdir)
        assert lost.returncode == 3 and lost.stderr.count("\n") == 1, lost.stderr
        assert "pass --dir with the folder it was started in" in lost.stderr
    finally:
        assert migrator("db", "stop", "--dir", str(folder), cwd=workdir).returncode == 0

    # A folder holding something else is not taken over.
    busy = workdir / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine\n")
    refused = migrator("db", "start", "--dir", str(busy), "--port", str(free_port()), cwd=workdir)
    assert refused.returncode == 2 and "the folder is in use" in refused.stderr
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]

    # Nothing there yet: status says so, stop has nothing to do.
    empty = migrator("db", "status", "--dir", str(workdir / "none"), cwd=workdir)
    assert empty.returncode == 3 and empty.stdout.startswith("no database yet:")
    assert "pass --dir with the folder it was started in" in empty.stdout
    idle = migrator("db", "stop", "--dir", str(workdir / "none"), cwd=workdir)
    assert idle.returncode == 0 and idle.stdout.startswith("not running:")
    assert "pass --dir with the folder it was started in" in idle.stdout
