"""Alembic revision files written from a plan's steps, and the history already on disk.

Each release becomes two revisions: ``<rev>_<release>_expand.py`` (the expand steps, then
the backfills, in ``upgrade()``; the rollback steps in ``downgrade()``) and
``<rev>_<release>_contract.py`` (the contract steps). A release's expand revises the
contract of the release it comes ``after:``; the first release revises the head already
there (a team's own history, or the baseline revision), so there is one history.

Revision ids are derived from the release name and the phase, so rendering again gives
the same files, and `migrator` knows which id to write into alembic_version when it
runs a phase itself (`migrator.render.history`).

Statements go to the driver's cursor as written: SQLAlchemy's text() would read ``:x``
as a bind parameter and the driver would read ``%`` as a placeholder.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from migrator.engine.steps import BackfillSpec, Step
from migrator.sqltext import dollar_quoted, ident, schema_first_sql

BASELINE = "baseline"


def revision_id(release: str, phase: str) -> str:
    """The Alembic revision id of one phase of one release: stable, 12 hex digits."""
    return hashlib.sha256(f"migrator:{release}:{phase}".encode()).hexdigest()[:12]


def slug(name: str) -> str:
    """A release name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "release"


@dataclass(frozen=True)
class Revision:
    """One revision file found on disk."""

    path: Path
    revision: str
    down_revision: str | None


def read_history(versions: Path) -> list[Revision]:
    """The revisions in a versions folder (module-level ``revision``/``down_revision``)."""
    found: list[Revision] = []
    if not versions.is_dir():
        return found
    for path in sorted(versions.glob("*.py")):
        values: dict[str, str | None] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            target = None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                if isinstance(value, ast.Constant) and (
                    value.value is None or isinstance(value.value, str)
                ):
                    values[target.id] = value.value
        if isinstance(values.get("revision"), str):
            found.append(Revision(path, str(values["revision"]), values.get("down_revision")))
    return found


def heads(history: Sequence[Revision]) -> list[str]:
    """Revisions nothing revises."""
    parents = {r.down_revision for r in history}
    return [r.revision for r in history if r.revision not in parents]


@dataclass
class RenderedPhase:
    """What one revision file holds."""

    release: str
    phase: str
    revision: str
    down_revision: str | None
    upgrade: list[tuple[str, Step]]
    downgrade: list[tuple[str, Step]] = field(default_factory=list)
    backfills: list[tuple[str, BackfillSpec, list[tuple[str, str]]]] = field(default_factory=list)
    downgrade_refused: str | None = None
    lock_timeout_ms: int = 1000
    schema: str = "public"
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def filename(self) -> str:
        """``<rev>_<release>_<phase>.py``."""
        return f"{self.revision}_{slug(self.release)}_{self.phase}.py"


def _quoted(revision: str | None) -> str:
    """A revision id as Python source, double-quoted like the rest of the file."""
    return "None" if revision is None else f'"{revision}"'


def _py(sql: str) -> str:
    """A Python string literal for SQL text, triple-quoted where that stays exact."""
    if '"""' not in sql and "\\" not in sql and not sql.endswith('"'):
        return f'"""{sql}"""' if "\n" in sql else repr(sql)
    return repr(sql)


def backfill_sql(spec: BackfillSpec, keys: list[tuple[str, str]], batch: int = 1000) -> str:
    """The backfill as SQL Alembic can run: batches over a one-column primary key.

    Each batch commits (a DO block may COMMIT when it runs outside a transaction, so it
    goes in an autocommit block). Without a one-column key it is one UPDATE.
    """
    table = ident(spec.schema, spec.table)
    sets = ", ".join(f"{ident(col)} = ({expr})" for col, expr in spec.set.items())
    if len(keys) != 1:
        return f"UPDATE {table} SET {sets} WHERE ({spec.needs})"
    key, key_type = keys[0]
    k = ident(key)
    return "DO " + dollar_quoted(
        "\n"
        "DECLARE\n"
        f"  _migrator_last {key_type};\n"
        f"  _migrator_batch {key_type}[];\n"
        "BEGIN\n"
        "  LOOP\n"
        f"    SELECT array_agg({k} ORDER BY {k}) INTO _migrator_batch FROM (\n"
        f"      SELECT {k} FROM {table}\n"
        f"      WHERE _migrator_last IS NULL OR {k} > _migrator_last\n"
        f"      ORDER BY {k} LIMIT {int(batch)}) AS _migrator_keys;\n"
        "    EXIT WHEN _migrator_batch IS NULL;\n"
        f"    UPDATE {table} SET {sets}\n"
        f"    WHERE {k} = ANY (_migrator_batch) AND ({spec.needs});\n"
        "    _migrator_last := _migrator_batch[array_length(_migrator_batch, 1)];\n"
        "    COMMIT;\n"
        "  END LOOP;\n"
        "END\n"
    )


def _body(steps: Sequence[tuple[str, Step]], lock_timeout_ms: int, schema: str) -> list[str]:
    lines = [f"    _execute(\"SET lock_timeout = '{int(lock_timeout_ms)}ms'\")"]
    schema_first = schema_first_sql(schema, local=False)
    if schema_first is not None:  # as migrator's own runs do (names the plan writes bare)
        lines.append(f"    _execute({_py(schema_first)})")
    for key, st in steps:
        lines.append(f"    # {key}: {st.description}")
        if st.autocommit:
            lines.append("    with op.get_context().autocommit_block():")
            lines += [f"        _execute({_py(s.sql)})" for s in st.statements]
        else:
            lines += [f"    _execute({_py(s.sql)})" for s in st.statements]
    return lines


def render_revision(rendered: RenderedPhase) -> str:
    """The text of one revision file."""
    up = _body(rendered.upgrade, rendered.lock_timeout_ms, rendered.schema)
    for key, spec, keys in rendered.backfills:
        up.append(f"    # {key}: {spec.description or 'backfill'} (batches, each committed)")
        sql = backfill_sql(spec, keys)
        if sql.startswith("DO "):
            up.append("    with op.get_context().autocommit_block():")
            up.append(f"        _execute({_py(sql)})")
        else:
            up.append(f"    _execute({_py(sql)})")
    if rendered.downgrade_refused:
        down = [f"    raise RuntimeError({rendered.downgrade_refused!r})"]
    elif rendered.downgrade:
        down = _body(rendered.downgrade, rendered.lock_timeout_ms, rendered.schema)
    else:
        down = ["    pass  # the upgrade changes nothing to undo"]
    notes = "".join(f"\nNote: {n}" for n in rendered.notes)
    down_rev = _quoted(rendered.down_revision)
    return (
        f'"""{rendered.release}: {rendered.phase}\n\n'
        f"Rendered by `migrator render` from {rendered.source or 'the plan'}. Change the plan\n"
        f"and render again rather than editing this file.{notes}\n\n"
        f"Revision ID: {rendered.revision}\n"
        f"Revises: {rendered.down_revision or ''}\n"
        '"""\n\n'
        "from __future__ import annotations\n\n"
        "from alembic import context, op\n\n"
        f'revision = "{rendered.revision}"\n'
        f"down_revision = {down_rev}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n\n"
        "def _execute(sql: str) -> None:\n"
        "    if context.is_offline_mode():\n"
        "        op.execute(sql)  # --sql: written out\n"
        "    else:\n"
        "        # As written, through the driver's cursor: no parsing of ':' or '%'.\n"
        "        op.get_bind().connection.cursor().execute(sql)\n\n\n"
        "def upgrade() -> None:\n" + "\n".join(up) + "\n\n\n"
        "def downgrade() -> None:\n" + "\n".join(down) + "\n"
    )


def render_baseline(sql: str, revision: str, down_revision: str | None, source: str) -> str:
    """A revision that creates the schema the first release starts from."""
    return (
        f'"""baseline: the schema the first release starts from\n\n'
        f"Rendered by `migrator render` from {source}.\n\n"
        f"Revision ID: {revision}\n"
        f"Revises: {down_revision or ''}\n"
        '"""\n\n'
        "from __future__ import annotations\n\n"
        "from alembic import context, op\n\n"
        f'revision = "{revision}"\n'
        f"down_revision = {_quoted(down_revision)}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n"
        f"BASELINE = {_py(sql)}\n\n\n"
        "def upgrade() -> None:\n"
        "    if context.is_offline_mode():\n"
        "        op.execute(BASELINE)\n"
        "        return\n"
        "    # The whole file in one simple-protocol call, as psql would send it; then the\n"
        "    # session's search_path back (pg_dump files empty it).\n"
        "    cursor = op.get_bind().connection.cursor()\n"
        "    cursor.execute(BASELINE)\n"
        "    cursor.execute('RESET search_path')\n\n\n"
        "def downgrade() -> None:\n"
        "    raise RuntimeError('the baseline cannot be downgraded: it would drop the schema')\n"
    )


ALEMBIC_INI = """\
# Rendered by `migrator render`. The database URL comes from MIGRATOR_DATABASE_URL or
# `alembic -x url=postgresql://...`; it is never written here.
[alembic]
script_location = %(here)s
path_separator = os
version_path_separator = os

[loggers]
keys = root,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

ENV_PY = '''\
"""Alembic environment for the revisions `migrator render` writes.

The URL comes from `alembic -x url=...` or MIGRATOR_DATABASE_URL (postgresql:// URLs are
given the psycopg 3 driver). Each revision runs in its own transaction; statements that
PostgreSQL refuses inside one (CREATE INDEX CONCURRENTLY) run in autocommit blocks.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "MIGRATOR_DATABASE_URL"
    )
    if not url:
        raise SystemExit("set MIGRATOR_DATABASE_URL or pass -x url=postgresql://...")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def run_migrations_offline() -> None:
    """--sql: write the statements out instead of running them."""
    context.configure(url=_url(), literal_binds=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the revisions against the database."""
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
'''

SCRIPT_MAKO = '''\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from __future__ import annotations

from alembic import op
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''
