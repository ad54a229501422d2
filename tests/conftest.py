"""Fixtures: a real PostgreSQL for the session, a fresh database per test module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.servers import Debian15Server, EmbeddedServer, Server, UrlServer

# The test files that take longest, longest first (a whole-suite run's JUnit times, summed
# per file). Under `-n auto --dist loadfile` each file is one piece of work handed to the
# next free worker, and pytest-xdist by default hands out the files with the most tests
# first: the few long tests (the fault bench's short run, the kill-and-resume loops, the
# demo, whole releases through the CLI) came last, where one worker ran them while the
# other had nothing left. Longest first, what is left at the end is short. A file not
# listed runs after these in the usual order: a stale list costs balance, never a test.
LONGEST_FIRST = (
    "test_faults_bench.py",
    "test_ops_catalogue.py",
    "test_backfill_privileges.py",
    "test_backfill_resume.py",
    "test_check.py",
    "test_release_outputs.py",
    "test_release_add_column.py",
    "test_backfill.py",
    "test_ops_options.py",
    "test_ops_rename_alter.py",
    "test_release_e2e.py",
    "test_render.py",
    "test_check_corpus.py",
    "test_ops_partitions.py",
    "test_ops_multichange.py",
    "test_demo.py",
    "test_cli_db.py",
    "test_ops_partitions_attach.py",
    "test_ops_constraints.py",
    "test_backfill_secrets.py",
    "test_names_quoted.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """pytest-xdist hands out the files in collection order (see LONGEST_FIRST)."""
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist's --no-loadscope-reorder
        config.option.loadscopereorder = False


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture scope
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of LONGEST_FIRST first, in its order; each file's tests keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def _cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The CLI keeps its cache (check's initdb'd data directory) under XDG_CACHE_HOME:
    a folder of the session's, never the real home."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """PostgreSQL 18 embedded, or the server of MIGRATOR_TEST_DATABASE_URL."""
    url = os.environ.get("MIGRATOR_TEST_DATABASE_URL")
    server: Server = UrlServer(url) if url else EmbeddedServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg15_server() -> Iterator[Server]:
    """Debian's PostgreSQL 15, started in a temp folder; skipped where it is absent."""
    reason = Debian15Server.unavailable()
    if reason:
        pytest.skip(reason)
    server = Debian15Server()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["pg18", "pg15"])
def server(request: pytest.FixtureRequest) -> Server:
    """Each test that takes it runs on PostgreSQL 18 (embedded) and 15 (Debian; skipped
    where absent): the operation suites, the type facts, the pagila release."""
    name = "pg_server" if request.param == "pg18" else "pg15_server"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture
def db(server: Server) -> Iterator[str]:
    """A fresh database for one test, on each version of ``server``; its URL."""
    url = server.create_database("ops")
    yield url
    server.drop_database(url)


@pytest.fixture(scope="module")
def module_db(pg_server: Server) -> Iterator[str]:
    """A fresh database for one test module; its URL."""
    url = pg_server.create_database("m")
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def fresh_db(pg_server: Server) -> Iterator[str]:
    """A fresh database for one test; its URL."""
    url = pg_server.create_database("f")
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def sql(fresh_db: str):  # type: ignore[no-untyped-def]
    """Run SQL on the fresh database: ``sql("SELECT 1")`` returns the rows."""

    def run(query: str, *params: object) -> list[tuple[object, ...]]:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []

    return run
