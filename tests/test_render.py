"""`migrator render`: Alembic revisions that give the catalog migrator's own run gives.

Two releases (a rename and two type changes, then an add_column) are rendered once
against a baseline on the embedded scratch server. Then, on fresh databases:
`alembic upgrade head` from empty equals baseline + `migrator expand/backfill/complete/
contract` of both; alembic_version follows migrator's phases (expand, rollback, contract,
the next release) so `alembic upgrade head` afterwards has nothing left to do; the expand
revision's downgrade restores the baseline catalog; the contract's refuses.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from typer.testing import CliRunner

from migrator import commands
from migrator.cli import app
from migrator.plan.loader import load_plan
from migrator.render.revisions import read_history, revision_id
from tests.support.catalog_snapshot import diff, schema_dump
from tests.support.servers import Server

BASELINE = """
CREATE TABLE users (
    id serial PRIMARY KEY,
    name varchar(40),
    email text NOT NULL DEFAULT 'nobody',
    score smallint CHECK (score >= 0),
    note text
);
CREATE INDEX users_score_idx ON users (score);
CREATE VIEW user_emails AS SELECT id, email, score FROM users;
CREATE TABLE orders (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES users (id),
                     comment text);
INSERT INTO users (name, email, score, note)
SELECT 'user' || g, 'u' || g || '@example.com', g, '50% off: ' || g FROM generate_series(1, 40) g;
INSERT INTO orders (user_id) SELECT 1 + g % 40 FROM generate_series(1, 80) g;
"""

R1 = """
release: r1
database: {lock_timeout: 2s}
expand:
  - rename_column: {table: users, from: email, to: contact_email}
  - alter_column: {table: users, column: score, type: integer}
  - alter_column: {table: users, column: id, type: bigint}
  - alter_column: {table: users, column: name, type: text}
contract: {not_before: 0s, operations: []}
"""

R2 = """
release: r2
after: r1
expand:
  - add_column:
      table: orders
      column: {name: label, type: text}
      up: "'order:' || id || ' 100%'"
      final: {nullable: false}
  - create_index: {table: orders, name: orders_comment_idx, columns: [comment]}
contract: {not_before: 0s, operations: []}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, pg_server: Server) -> Path:
    """Plans, the baseline and the rendered migrations/, once for the module."""
    root = tmp_path_factory.mktemp("render")
    (root / "baseline.sql").write_text(BASELINE)
    (root / "r1.yaml").write_text(R1)
    (root / "r2.yaml").write_text(R2)
    # r2 first on purpose: the order comes from `after:`.
    commands.render(
        [
            (load_plan(root / "r2.yaml"), "plans/r2.yaml"),
            (load_plan(root / "r1.yaml"), "plans/r1.yaml"),
        ],
        commands.RenderOptions(
            out=root / "migrations",
            baseline=root / "baseline.sql",
            scratch_url=pg_server.admin_url,  # test_cli covers the embedded server
        ),
    )
    return root


def alembic(project: Path, url: str, verb: str, *args: str) -> None:
    config = Config(str(project / "migrations" / "alembic.ini"))
    config.cmd_opts = argparse.Namespace(x=[f"url={url}"])
    getattr(command, verb)(config, *args)


def version(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version").fetchall()]


def dump(url: str) -> str:
    """The schema without alembic_version, which only one side may have."""
    lines = schema_dump(url).splitlines()
    out, skip = [], False
    for line in lines:
        if "alembic_version" in line:
            skip = line.rstrip().endswith(("(", "public.alembic_version"))
            continue
        if skip:
            skip = not line.rstrip().endswith(";")
            continue
        out.append(line)
    return "\n".join(out)


def run_migrator(project: Path, url: str, releases: tuple[str, ...] = ("r1", "r2")) -> None:
    opts = commands.Options(database_url=url, force=True, force_reason="test")
    for name in releases:
        plan = load_plan(project / f"{name}.yaml")
        commands.expand(plan, opts)
        commands.backfill(plan, opts)
        commands.complete(plan, opts)
        commands.contract(opts, plan.release)


@pytest.fixture
def dbs(pg_server: Server) -> Iterator[list[str]]:
    urls = [pg_server.create_database("rd") for _ in range(2)]
    yield urls
    for url in urls:
        pg_server.drop_database(url)


def load_baseline(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASELINE.encode())


def test_files_chain_by_after(project: Path) -> None:
    history = {r.revision: r for r in read_history(project / "migrations" / "versions")}
    base = revision_id("baseline", "baseline")
    r1e, r1c = revision_id("r1", "expand"), revision_id("r1", "contract")
    r2e, r2c = revision_id("r2", "expand"), revision_id("r2", "contract")
    assert {k: v.down_revision for k, v in history.items()} == {
        base: None,
        r1e: base,
        r1c: r1e,
        r2e: r1c,
        r2c: r2e,
    }
    assert history[r1e].path.name == f"{r1e}_r1_expand.py"
    text = history[r2e].path.read_text()
    # CONCURRENTLY inside an autocommit block; the `%` of the plan reaches the server as is.
    assert "autocommit_block():\n        _execute('DROP INDEX CONCURRENTLY" in text
    assert "100%" in text
    for name in ("alembic.ini", "env.py", "script.py.mako"):
        assert (project / "migrations" / name).exists()


def test_render_is_deterministic(project: Path, tmp_path: Path, pg_server: Server) -> None:
    commands.render(
        [
            (load_plan(project / "r1.yaml"), "plans/r1.yaml"),
            (load_plan(project / "r2.yaml"), "plans/r2.yaml"),
        ],
        commands.RenderOptions(
            out=tmp_path / "m", baseline=project / "baseline.sql", scratch_url=pg_server.admin_url
        ),
    )
    mine = sorted(p.name for p in (tmp_path / "m" / "versions").glob("*.py"))
    theirs = sorted(p.name for p in (project / "migrations" / "versions").glob("*.py"))
    assert mine == theirs
    for name in mine:
        a = (tmp_path / "m" / "versions" / name).read_text()
        b = (project / "migrations" / "versions" / name).read_text()
        assert a == b, name


def test_alembic_upgrade_head_equals_migrator(project: Path, dbs: list[str]) -> None:
    same_catalog(project, *dbs)


def test_alembic_upgrade_head_equals_migrator_on_postgresql_15(
    project: Path, pg15_server: Server
) -> None:
    """Rendered on the embedded 18, applied to 15: the same statements work there."""
    urls = [pg15_server.create_database("rd") for _ in range(2)]
    try:
        same_catalog(project, *urls)
    finally:
        for url in urls:
            pg15_server.drop_database(url)


def same_catalog(project: Path, by_alembic: str, by_migrator: str) -> None:
    dbs = [by_alembic, by_migrator]
    alembic(project, by_alembic, "upgrade", "head")
    assert version(by_alembic) == [revision_id("r2", "contract")]
    load_baseline(by_migrator)
    run_migrator(project, by_migrator)
    a, m = dump(by_alembic), dump(by_migrator)
    assert a == m, diff(m, a)
    # and the data: the backfills ran in both
    for url in dbs:
        with psycopg.connect(url) as conn:
            assert conn.execute(
                "SELECT count(*), count(DISTINCT label) FROM orders WHERE label LIKE 'order:%'"
            ).fetchone() == (80, 80)
            assert conn.execute(
                "SELECT count(*) FROM users WHERE contact_email LIKE 'u%@example.com'"
            ).fetchone() == (40,)


def test_migrator_keeps_alembic_version(project: Path, dbs: list[str]) -> None:
    url, reference = dbs
    base = revision_id("baseline", "baseline")
    alembic(project, url, "upgrade", base)
    assert version(url) == [base]
    opts = commands.Options(database_url=url, force=True, force_reason="test")
    r1, r2 = load_plan(project / "r1.yaml"), load_plan(project / "r2.yaml")

    commands.expand(r1, opts)
    assert version(url) == [revision_id("r1", "expand")]
    commands.rollback(r1, opts)
    assert version(url) == [base]
    commands.expand(r1, opts)
    commands.backfill(r1, opts)
    commands.complete(r1, opts)
    # the next release starts before the previous contract ran: alembic_version waits
    commands.expand(r2, opts)
    assert version(url) == [revision_id("r1", "expand")]
    commands.contract(opts, "r1")
    assert version(url) == [revision_id("r2", "expand")]
    commands.backfill(r2, opts)
    commands.complete(r2, opts)
    commands.contract(opts, "r2")
    assert version(url) == [revision_id("r2", "contract")]

    # Alembic agrees: nothing left to run, and the same catalog as Alembic alone gives.
    alembic(project, url, "upgrade", "head")
    alembic(project, reference, "upgrade", "head")
    assert dump(url) == dump(reference), diff(dump(reference), dump(url))


def test_without_alembic_version_nothing_is_created(project: Path, dbs: list[str]) -> None:
    url = dbs[0]
    load_baseline(url)
    run_migrator(project, url, ("r1",))
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)


def test_expand_downgrade_restores_the_baseline(project: Path, dbs: list[str]) -> None:
    url, reference = dbs
    base = revision_id("baseline", "baseline")
    alembic(project, reference, "upgrade", base)
    alembic(project, url, "upgrade", revision_id("r1", "expand"))
    alembic(project, url, "downgrade", base)
    assert version(url) == [base]
    assert dump(url) == dump(reference), diff(dump(reference), dump(url))


def test_contract_downgrade_refuses(project: Path, dbs: list[str]) -> None:
    url = dbs[0]
    alembic(project, url, "upgrade", revision_id("r1", "contract"))
    with pytest.raises(RuntimeError, match="cannot be undone"):
        alembic(project, url, "downgrade", revision_id("r1", "expand"))


def test_render_against_a_live_database_reads_only(
    project: Path, dbs: list[str], tmp_path: Path
) -> None:
    url = dbs[0]
    load_baseline(url)
    before = schema_dump(url)
    (tmp_path / "m" / "versions").mkdir(parents=True)
    # the team's own history: r1's expand must revise its head
    (tmp_path / "m" / "versions" / "abc123_team.py").write_text(
        'revision = "abc123"\ndown_revision = None\n'
    )
    commands.render(
        [(load_plan(project / "r1.yaml"), "plans/r1.yaml")],
        commands.RenderOptions(out=tmp_path / "m", database_url=url),
    )
    assert schema_dump(url) == before
    history = {r.revision: r for r in read_history(tmp_path / "m" / "versions")}
    assert history[revision_id("r1", "expand")].down_revision == "abc123"
    # The same statements as rendered on the scratch server from the baseline.
    name = f"{revision_id('r1', 'expand')}_r1_expand.py"
    live = (tmp_path / "m" / "versions" / name).read_text()
    scratch = (project / "migrations" / "versions" / name).read_text()
    assert live.split("def _execute")[1] == scratch.split("def _execute")[1]


def test_cli(project: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "m"
    result = runner.invoke(
        app,
        [
            "render",
            str(project / "r1.yaml"),
            "--out",
            str(out),
            "--baseline",
            str(project / "baseline.sql"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "env.py").exists()
    assert len(list((out / "versions").glob("*.py"))) == 3
    # r2 alone into an empty folder: r1's contract revision is missing
    result = runner.invoke(app, ["render", str(project / "r2.yaml"), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2
    assert "render r1 first" in result.output


def test_offline_sql(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`alembic upgrade head --sql` writes the statements out, autocommit blocks included."""
    alembic(project, "postgresql://nobody@localhost/none", "upgrade", "head", True)
    out = capsys.readouterr().out
    assert "ALTER TABLE public.users ADD COLUMN contact_email text;" in out
    assert "CREATE INDEX CONCURRENTLY orders_comment_idx" in out
    assert out.count("Running upgrade") == 5


def test_the_plans_own_baseline(project: Path, tmp_path: Path, pg_server: Server) -> None:
    """`baseline:` in the first plan (relative to it) is used when --baseline is not given."""
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "schema.sql").write_text(BASELINE)
    (tmp_path / "plans" / "r1.yaml").write_text("baseline: schema.sql\n" + R1)
    commands.render(
        [(load_plan(tmp_path / "plans" / "r1.yaml"), str(tmp_path / "plans" / "r1.yaml"))],
        commands.RenderOptions(out=tmp_path / "m", scratch_url=pg_server.admin_url),
    )
    history = {r.revision: r for r in read_history(tmp_path / "m" / "versions")}
    base = revision_id("baseline", "baseline")
    assert history[revision_id("r1", "expand")].down_revision == base
    assert "CREATE TABLE users" in history[base].path.read_text()


def test_the_committed_migrations_are_what_render_writes(tmp_path: Path, pg_server: Server) -> None:
    """migrations/ in this repository is the example releases rendered: rendering them
    again gives the same files (so a change to what an operation runs shows up there)."""
    repo = Path(__file__).resolve().parents[1]
    names = ["plans/2026-11-add-phone.yaml", "plans/2026-12-contact-email.yaml"]
    commands.render(
        [(load_plan(repo / name), name) for name in names],
        commands.RenderOptions(
            out=tmp_path / "m",
            baseline=repo / "plans" / "baseline.sql",
            scratch_url=pg_server.admin_url,
        ),
    )
    mine = sorted(p.name for p in (tmp_path / "m" / "versions").glob("*.py"))
    committed = sorted(p.name for p in (repo / "migrations" / "versions").glob("*.py"))
    assert mine == committed
    for name in mine:
        fresh = (tmp_path / "m" / "versions" / name).read_text()
        assert fresh == (repo / "migrations" / "versions" / name).read_text(), (
            f"migrations/versions/{name} is stale: run `migrator render {' '.join(names)} "
            "--baseline plans/baseline.sql`"
        )
