"""Where teams lint: the pre-commit hook from docs/lint-rules.md run by pre-commit itself on
a sample git repository, and `migrator lint --alembic` on hand-written revisions, each
finding at the revision file and the line of its op call. No database anywhere."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from migrator.cli import app
from migrator.errors import ExitCode

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "lint-rules.md"
# Nothing listens on port 1 of loopback: a lint that tried the database would fail (exit 4).
NOWHERE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
BIN = Path(sys.executable).parent


def _docs_configs() -> list[dict[str, object]]:
    """The pre-commit configs docs/lint-rules.md gives to copy, parsed."""
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return [yaml.safe_load(b) for b in blocks if "repos:" in b]


def _pre_commit() -> str:
    found = shutil.which("pre-commit", path=str(BIN)) or shutil.which("pre-commit")
    if found is None:
        pytest.fail("pre-commit is not installed: pip install -e '.[test]'")
    return found


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )


PLAN_WITH_FINDING = """\
release: 2026-12-index
expand:
  - sql:
      expand: CREATE INDEX users_name_idx ON users (name);
      rollback: DROP INDEX CONCURRENTLY IF EXISTS users_name_idx;
"""

PLAN_CLEAN = """\
release: 2026-12-index
expand:
  - create_index: {table: users, name: users_name_idx, columns: [name]}
"""


def test_manifest_and_the_docs_configs_are_valid_and_agree() -> None:
    """The hooks manifest and both configs the docs give pass pre-commit's own
    validation; the `repo: local` hook (run below) is the manifest's migrator-lint."""
    tool = _pre_commit()
    done = subprocess.run(
        [tool, "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    configs = _docs_configs()
    assert len(configs) == 2
    manifest = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    remote, local = configs
    assert [h["id"] for h in remote["repos"][0]["hooks"]] == list(manifest)  # type: ignore[index]
    (hook,) = local["repos"][0]["hooks"]  # type: ignore[index]
    for key in ("id", "entry", "files", "require_serial"):
        assert hook[key] == manifest["migrator-lint"][key], key


def test_pre_commit_runs_the_docs_hook_on_a_sample_repository(tmp_path: Path) -> None:
    """pre-commit (installed as a git hook) runs the docs' `repo: local` config on a
    commit of a plan and a SQL file: the commit is refused with each finding at its file
    and line, judged by migrator.yaml's pg_version, offline although migrator.yaml names
    a database; a YAML file outside plans/ is not passed; the fixed files commit."""
    tool = _pre_commit()
    repo = tmp_path / "repo"
    repo.mkdir()
    assert _git(repo, "init", "-q").returncode == 0
    (_, local) = _docs_configs()
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(local))
    (repo / "migrator.yaml").write_text(
        f"database_url: {NOWHERE}\npg_version: 15\nlint: {{disable: [M041]}}\n"
    )
    (repo / "plans").mkdir()
    (repo / "plans" / "2026-12-index.yaml").write_text(PLAN_WITH_FINDING)
    (repo / "db").mkdir()
    (repo / "db" / "001_email.sql").write_text(
        "SET lock_timeout = '1s';\nALTER TABLE users ADD COLUMN email text NOT NULL;\n"
    )
    (repo / "ci").mkdir()
    (repo / "ci" / "settings.yaml").write_text("not: a plan\n")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PRE_COMMIT_HOME": str(tmp_path / "cache"),
    }
    env.pop("MIGRATOR_DATABASE_URL", None)
    env.pop("MIGRATOR_PG_VERSION", None)
    done = subprocess.run(
        [tool, "install"], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _git(repo, "add", ".")

    def commit() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
            + ["commit", "-q", "-m", "release"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    refused = commit()
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "migrator lint" in output and "Failed" in output, output
    assert "plans/2026-12-index.yaml:4:15: error M001" in output, output
    assert "db/001_email.sql:2:1: error M012" in output, output
    assert "(PostgreSQL 15)" in output, output
    assert "settings.yaml" not in output and "127.0.0.1" not in output, output
    assert _git(repo, "log", "--oneline").stdout == ""  # nothing was committed

    (repo / "plans" / "2026-12-index.yaml").write_text(PLAN_CLEAN)
    (repo / "db" / "001_email.sql").write_text(
        "SET lock_timeout = '1s';\nALTER TABLE users ADD COLUMN IF NOT EXISTS email text;\n"
    )
    _git(repo, "add", ".")
    passed = commit()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Passed" in passed.stdout + passed.stderr
    assert _git(repo, "log", "--oneline").stdout.count("\n") == 1


# -- migrator lint --alembic -----------------------------------------------------------------

REVISIONS = {
    "a1_users.py": '''
        """users"""
        import sqlalchemy as sa
        from alembic import op

        revision = "a1"
        down_revision = None


        def upgrade():
            op.create_table(
                "users",
                sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
                sa.Column("name", sa.Text()),
            )
            op.create_index("ix_users_name", "users", ["name"])
    ''',
    "b2_email.py": '''
        """email"""
        import sqlalchemy as sa
        from alembic import op

        revision = "b2"
        down_revision = "a1"


        def upgrade():
            op.execute("SET lock_timeout = '1s'")
            op.add_column("users", sa.Column("email", sa.Text(), nullable=False))
            # migrator-lint: ignore M001 users holds 40 rows
            op.create_index("ix_users_email", "users", ["email"])
            with op.get_context().autocommit_block():
                op.create_index(
                    "ix_users_name_email",
                    "users",
                    ["name", "email"],
                    postgresql_concurrently=True,
                    if_not_exists=True,
                )
    ''',
}


@pytest.fixture(scope="module")
def alembic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("alembic")
    (folder / "versions").mkdir()
    for name, text in REVISIONS.items():
        (folder / "versions" / name).write_text(textwrap.dedent(text).lstrip())
    (folder / "alembic.ini").write_text(f"[alembic]\nscript_location = {folder}\n")
    return folder


def _lint(folder: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["lint", "--alembic", *args, "--alembic-config", str(folder / "alembic.ini")],
    )
    return result.exit_code, result.output


def test_alembic_revision_findings_at_the_revision_file_and_line(alembic_dir: Path) -> None:
    code, output = _lint(alembic_dir, "b2", "--format", "json")
    assert code == ExitCode.FINDINGS, output
    report = json.loads(output)
    b2 = str(alembic_dir / "versions" / "b2_email.py")
    found = {(f["rule"], f["file"], f["line"]) for f in report["findings"]}
    # The NOT NULL column at the op.add_column line; the concurrent build's IF NOT EXISTS
    # leaves an INVALID leftover in place (M004) at the op.create_index call's line.
    assert ("M012", b2, 11) in found, report
    assert ("M004", b2, 15) in found, report
    # ix_users_email without CONCURRENTLY: suppressed by the comment above its call.
    assert [(f["rule"], f["line"], f["suppressed"]) for f in report["suppressed"]] == [
        ("M001", 13, "users holds 40 rows")
    ]
    assert all(f["file"] == b2 for f in report["findings"])


def test_alembic_range_leaves_base_out_and_new_tables_are_new(alembic_dir: Path) -> None:
    """a1:b2 lints b2 only (as `alembic upgrade a1:b2 --sql`); base:b2 lints both, and
    then users is created in the same run, so b2's statements on it are not held to the
    locking rules."""
    code, output = _lint(alembic_dir, "a1:b2", "--format", "json")
    assert code == ExitCode.FINDINGS
    assert {f["rule"] for f in json.loads(output)["findings"]} >= {"M012"}
    assert json.loads(output)["source"].startswith("Alembic revisions b2 in ")
    code, output = _lint(alembic_dir, "base:b2", "--format", "json")
    report = json.loads(output)
    assert report["source"].startswith("Alembic revisions a1, b2 in ")
    assert "M012" not in {f["rule"] for f in report["findings"]}, report
    # Revision files, as pre-commit passes them, name the same revisions.
    files = [str(alembic_dir / "versions" / n) for n in ("b2_email.py", "a1_users.py")]
    code, by_files = _lint(alembic_dir, *files, "--format", "json")
    assert json.loads(by_files)["source"] == report["source"]


def test_alembic_text_output_names_file_line_and_revision(alembic_dir: Path) -> None:
    code, output = _lint(alembic_dir, "b2", "--pg-version", "15")
    assert code == ExitCode.FINDINGS
    b2 = alembic_dir / "versions" / "b2_email.py"
    assert f"{b2}:11: error M012 [revision b2]" in output, output
    assert "(PostgreSQL 15)" in output


def test_alembic_bad_input_is_one_line_exit_2(alembic_dir: Path, tmp_path: Path) -> None:
    code, output = _lint(alembic_dir, "a1:zz9")
    assert code == ExitCode.BAD_INPUT and "zz9" in output
    assert len(output.strip().splitlines()) == 1
    broken = tmp_path / "alembic"
    shutil.copytree(alembic_dir, broken)
    (broken / "alembic.ini").write_text(f"[alembic]\nscript_location = {broken}\n")
    (broken / "versions" / "c3_typo.py").write_text(
        'revision = "c3"\ndown_revision = "b2"\nfrom alembic import op\n\n\n'
        'def upgrade():\n    op.execute("SELEC 1")\n'
    )
    code, output = _lint(broken, "c3")
    assert code == ExitCode.BAD_INPUT, output
    assert f"{broken / 'versions' / 'c3_typo.py'}:7: revision c3: SQL does not parse" in output
    assert len(output.strip().splitlines()) == 1
