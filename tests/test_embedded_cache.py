"""The embedded server's data directory cache: `migrator check` copies an initdb'd data
directory kept per PostgreSQL binary instead of running initdb on each run.

Each cache here lives in tmp_path (never the real home): a second start copies the
first's entry, a corrupted or half-built entry is rebuilt (also by two builders at
once), an unusable cache falls back to initdb, settings land before the first start, and
a builder never discards the entry another stored meanwhile.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from migrator.cli.common import cache_dir
from migrator.db import embedded
from migrator.db.embedded import (
    MANIFEST,
    EmbeddedPostgres,
    cached_data_directory,
    memory_folder,
    start,
)
from migrator.errors import DatabaseError
from migrator.verify.scratch import DISPOSABLE_SETTINGS


@pytest.fixture(scope="module")
def memory() -> Iterator[Path | None]:
    """Where check puts its servers (memory where there is room): the disk of a busy
    machine makes each copy and start here ten times slower."""
    yield memory_folder()


@pytest.fixture(scope="module")
def scratch_root(memory: Path | None) -> Iterator[Path]:
    """The module's temporary folder, in memory where there is room (not the home)."""
    folder = Path(tempfile.mkdtemp(prefix="migrator-test-cache-", dir=memory))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def cache(scratch_root: Path, memory: Path | None) -> Path:
    """One cache for the module, built once (one initdb) by a first start on it, which
    stores its entry while the server runs and is done when it stops."""
    folder = scratch_root / "cache"
    start(cache=folder, temp_root=memory).stop()
    return folder


@pytest.fixture
def tmp(scratch_root: Path) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(dir=scratch_root))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _entry(cache: Path) -> Path:
    """The plain entry (a prepared variant's name extends it)."""
    return min((p for p in cache.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _settings(pg: EmbeddedPostgres, names: list[str]) -> dict[str, str]:
    with psycopg.connect(pg.url) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (names,)
        ).fetchall()
    return {str(n): str(v) for n, v in rows}


@pytest.fixture
def started() -> Iterator[list[EmbeddedPostgres]]:
    servers: list[EmbeddedPostgres] = []
    yield servers
    for pg in servers:
        pg.stop()


def test_a_second_start_copies_the_cached_data_directory(
    cache: Path, memory: Path | None, started: list[EmbeddedPostgres]
) -> None:
    entry = _entry(cache)
    assert entry.name.startswith("pgdata-18.")
    before = (entry / MANIFEST).stat()
    for _ in range(2):
        started.append(start(cache=cache, settings=DISPOSABLE_SETTINGS, temp_root=memory))
    # The entry was used as it was, not rebuilt; each server has its own copy.
    after = (entry / MANIFEST).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in cache.iterdir()] == [entry.name]
    first, second = started
    assert first.folder != second.folder
    for pg in started:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int)")  # each writes to its own copy
        # The settings were in place from the first start: no restart was needed.
        assert _settings(pg, list(DISPOSABLE_SETTINGS)) == DISPOSABLE_SETTINGS
    assert not (entry / "pgdata" / "postmaster.pid").exists()


def test_a_corrupted_entry_is_rebuilt_also_by_two_processes_at_once(
    tmp: Path, cache: Path, memory: Path | None, started: list[EmbeddedPostgres]
) -> None:
    own = tmp / "cache"
    own.mkdir()
    entry = own / _entry(cache).name
    os.rename(_entry(cache), entry)  # the module's entry, this test's to spoil and rebuild
    try:
        # A file cut short and a folder gone (a disk that lost data since, a hand in the
        # cache); a build cut short never has its manifest, which fails the same test.
        victim = entry / "pgdata" / "global" / "pg_control"
        victim.write_bytes(victim.read_bytes()[:100])
        shutil.rmtree(entry / "pgdata" / "pg_xact")
        results: list[Path | BaseException] = []

        def build() -> None:
            try:
                results.append(cached_data_directory(own))
            except BaseException as exc:  # the test reports it
                results.append(exc)

        threads = [threading.Thread(target=build) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [entry / "pgdata"] * 2
        assert victim.stat().st_size == 8192 and (entry / "pgdata" / "pg_xact").is_dir()
        # Only the rebuilt entry is left: no build folder, nothing discarded lying about.
        assert [p.name for p in own.iterdir()] == [entry.name]
        started.append(start(cache=own, temp_root=memory))
        assert _settings(started[0], ["server_version_num"])["server_version_num"] >= "180000"
    finally:
        os.rename(entry, cache / entry.name)


def test_a_prepared_variant_is_made_once_and_one_that_fails_is_not_kept(
    cache: Path, memory: Path | None, started: list[EmbeddedPostgres]
) -> None:
    runs: list[str] = []

    def load(url: str) -> None:
        runs.append(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE baseline_here")

    for _ in range(2):
        started.append(start(cache=cache, temp_root=memory, prepared=("demo", load)))
        started[-1].stop()  # the first stores the variant by the time it stops
    assert len(runs) == 1  # made once, then copied
    started[:] = [start(cache=cache, temp_root=memory, prepared=("demo", load))]
    for pg in started:
        with psycopg.connect(pg.url) as conn:
            names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        assert "baseline_here" in names
    variant = cache / f"{_entry(cache).name}-demo"
    assert variant.is_dir() and not (variant / "pgdata" / "postmaster.pid").exists()
    # A variant whose copy does not match its manifest (a file cut short since) is not
    # started from: it is made again, and replaces the damaged one.
    victim = variant / "pgdata" / "global" / "pg_control"
    victim.write_bytes(victim.read_bytes()[:100])
    again = start(cache=cache, temp_root=memory, prepared=("demo", load))
    again.stop()
    assert len(runs) == 2 and victim.stat().st_size == 8192

    def broken(url: str) -> None:
        raise DatabaseError("cannot load baseline.sql: syntax error")

    started.append(start(cache=cache, temp_root=memory, prepared=("broken", broken)))
    with psycopg.connect(started[-1].url) as conn:  # the plain copy: no variant kept
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not any("broken" in p.name for p in cache.iterdir())
    shutil.rmtree(variant)


def test_an_unusable_cache_falls_back_to_initdb(
    tmp: Path, memory: Path | None, started: list[EmbeddedPostgres]
) -> None:
    not_a_folder = tmp / "cache"
    not_a_folder.write_text("a file where the cache folder would be")
    started.append(start(cache=not_a_folder, temp_root=memory))
    with psycopg.connect(started[0].url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not_a_folder.read_text().startswith("a file")


def test_the_cli_keeps_its_cache_under_xdg_cache_home_else_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "migrator"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "migrator"


def test_a_discarded_server_stops_at_once_and_leaves_nothing(
    cache: Path, memory: Path | None
) -> None:
    # check's own server: stopped in immediate mode (no shutdown checkpoint), waited for
    # until it has gone, its folder removed, nothing the wheel stops again at exit.
    pg = start(cache=cache, settings=DISPOSABLE_SETTINGS, temp_root=memory)
    url, folder = pg.url, pg.folder
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id")
    pg.stop(discard=True)
    assert not folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5)
    pg.stop(discard=True)  # a second stop is harmless


@pytest.mark.parametrize("through", ["cached_data_directory", "start"])
def test_a_variant_another_builder_stored_meanwhile_is_kept(
    through: str, cache: Path, memory: Path | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two builders of one new variant: A finds it missing, B then builds and stores it,
    # then A goes on. B's entry (which others may be copying) must stay as it is; A's
    # own build is the one dropped.
    name = f"race-{through}"
    variant = cache / f"{_entry(cache).name}-{name}"
    runs: list[str] = []

    def load(url: str) -> None:
        runs.append(url)

    def build() -> None:
        if through == "start":
            start(cache=cache, temp_root=memory, prepared=(name, load)).stop()
        else:
            cached_data_directory(cache, (name, load))

    stored: list[os.stat_result] = []
    a = threading.current_thread()

    def then_b(looks: Callable[..., bool]) -> Callable[..., bool]:
        def look(entry: Path, *args: Path) -> bool:
            seen = looks(entry, *args)
            if entry == variant and threading.current_thread() is a and not stored:
                other = threading.Thread(target=build)  # B, between A's look and its build
                other.start()
                other.join()
                stored.append((variant / MANIFEST).stat())
            return seen

        return look

    # A looks for the entry with _intact (cached_data_directory) or by copying it (start).
    monkeypatch.setattr(embedded, "_intact", then_b(embedded._intact))
    monkeypatch.setattr(embedded, "_copy_entry", then_b(embedded._copy_entry))
    try:
        build()  # A
        monkeypatch.undo()
        assert len(runs) == 2  # both built it
        after = (variant / MANIFEST).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stored[0].st_ino, stored[0].st_mtime_ns)
        assert not [p.name for p in cache.iterdir() if p.name.startswith(".")]
    finally:
        shutil.rmtree(variant, ignore_errors=True)


def test_a_start_sweeps_the_folders_a_killed_check_left(
    cache: Path, scratch_root: Path, memory: Path | None
) -> None:
    # A check killed while its server's folder was being removed in the background
    # (review finding) leaves the folder; the next start in the same place removes it,
    # and only it: not a folder whose process is alive (its lock held), one with no lock
    # file (being made), one whose server still runs, or anything not migrator's.
    root = scratch_root / "sweep"
    root.mkdir()
    dead = root / "migrator-pg-dead"
    (dead / "pgdata").mkdir(parents=True)
    (dead / embedded.OWNER_LOCK).touch()
    alive = root / "migrator-pg-alive"
    alive.mkdir()
    held = (alive / embedded.OWNER_LOCK).open("w")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    making = root / "migrator-pg-making"
    making.mkdir()
    running = root / "migrator-pg-running"
    (running / "pgdata").mkdir(parents=True)
    (running / embedded.OWNER_LOCK).touch()
    (running / "pgdata" / "postmaster.pid").write_text(f"{os.getpid()}\n/x\n")
    other = root / "not-migrator"
    other.mkdir()
    (other / embedded.OWNER_LOCK).touch()
    pg = start(cache=cache, temp_root=root)
    try:
        assert not dead.exists()
        assert alive.exists() and making.exists() and running.exists() and other.exists()
        # The new server's own folder is held: a later sweep leaves it.
        assert embedded.sweep_abandoned(root) == []
        assert pg.folder.exists()
    finally:
        pg.stop(discard=True)
        held.close()
    assert not pg.folder.exists()
    assert embedded.sweep_abandoned(root) == [alive]  # its process let go


def test_a_sweep_never_takes_a_folder_being_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another start sweeps right between the new folder's lock file being made and its
    # lock being taken (review finding: it saw the file free and removed the folder).
    import fcntl

    real = fcntl.flock
    swept: list[list[Path]] = []

    def flock_after_a_sweep(handle: object, how: int) -> None:
        swept.append(embedded.sweep_abandoned(tmp_path))
        real(handle, how)  # type: ignore[arg-type]

    folder = tmp_path / "migrator-pg-new"
    folder.mkdir()
    monkeypatch.setattr(fcntl, "flock", flock_after_a_sweep)
    held = embedded._hold_owner_lock(folder)
    monkeypatch.setattr(fcntl, "flock", real)
    try:
        assert swept == [[]]
        assert (folder / embedded.OWNER_LOCK).exists()
        assert embedded.sweep_abandoned(tmp_path) == []  # held
    finally:
        held.close()
