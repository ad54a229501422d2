"""`plan new --from-models`: a plan from SQLAlchemy models and the schema before the release.

The models (a MetaData, or a declarative base whose ``metadata`` it is) are compared
with the schema by Alembic's autogenerate (`produce_migrations`), and its operations are
converted by `migrator.authoring.convert`. The schema is the live database when a URL is
given; else a scratch database built the way `migrator check` builds the schema before
a release (the chain of plans in the plans folder from its ``baseline:``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import ops
from sqlalchemy.engine import Connection

from migrator.authoring.convert import Choices, Converter
from migrator.authoring.draft import Draft
from migrator.db.connection import connect, make_engine
from migrator.db.embedded import start
from migrator.engine.catalog import Catalog
from migrator.errors import PlanError, UsageError
from migrator.observer import NULL_OBSERVER, Observer
from migrator.pgtypes import rewrites
from migrator.plan.loader import load_plan
from migrator.plan.models import Plan
from migrator.verify.phase_schemas import Phases, before_database
from migrator.verify.scratch import ScratchServer


def load_metadata(target: str, search_path: list[str] | None = None) -> tuple[sa.MetaData, Any]:
    """``MODULE:ATTR`` -> (its MetaData, the object named); bad input is a UsageError."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--from-models {target}: expected MODULE:ATTR, e.g. app.models:Base")
    added = [p for p in search_path or [] if p not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error the user's module raises is their bad input
        first = (str(exc).splitlines() or [""])[0]
        raise UsageError(
            f"--from-models {target}: module {module_name} does not import: "
            f"{type(exc).__name__}: {first}"
        ) from None
    finally:
        for path in added:
            if path in sys.path:
                sys.path.remove(path)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"--from-models {target}: {module_name} has no attribute {attr}")
        obj = getattr(obj, part)
    metadata = obj if isinstance(obj, sa.MetaData) else getattr(obj, "metadata", None)
    if not isinstance(metadata, sa.MetaData):
        raise UsageError(
            f"--from-models {target}: {attr} is a {type(obj).__name__}, not a SQLAlchemy "
            "MetaData or a declarative base"
        )
    return metadata, obj


def _model_names(target: str, obj: Any) -> dict[str, str]:
    """table name -> the mapped class's dotted name, for the source comments."""
    names: dict[str, str] = {}
    registry = getattr(obj, "registry", None)
    for mapper in getattr(registry, "mappers", ()):
        cls = mapper.class_
        table = getattr(mapper, "local_table", None)
        if isinstance(table, sa.Table):
            names[table.name] = f"{cls.__module__}:{cls.__qualname__}"
    return names


def _source(target: str, obj: Any) -> Callable[[ops.MigrateOperation], str]:
    classes = _model_names(target, obj)
    module = target.partition(":")[0]

    def where(op: ops.MigrateOperation) -> str:
        table = getattr(op, "table_name", None) or getattr(op, "source_table", None)
        owner = classes.get(str(table), f"{module}:{target.partition(':')[2]}.tables[{table!r}]")
        name = getattr(op, "index_name", None) or getattr(op, "constraint_name", None)
        if isinstance(op, ops.AddColumnOp):
            return f"from the model {owner}.{op.column.name}"
        if isinstance(op, ops.AlterColumnOp):
            return f"from the model {owner}.{op.column_name}"
        if isinstance(op, ops.DropColumnOp):
            return f"{table}.{op.column_name}: in the database, not in the model {owner}"
        if isinstance(op, ops.DropTableOp):
            return f"table {table}: in the database, not in {target}"
        if isinstance(op, ops.DropIndexOp | ops.DropConstraintOp):
            return f"{name} on {table}: in the database, not in the model {owner}"
        return f"from the model {owner}" + (f" ({name})" if name else "")

    return where


def _casts(conn: Connection) -> Callable[[str, str], bool]:
    def casts(src: str, dst: str) -> bool:
        # PostgreSQL itself answers: a cast of a typed NULL plans only where a cast exists.
        try:
            with conn.begin_nested():  # a failed try rolls back to its savepoint only
                conn.exec_driver_sql(f"SELECT CAST(CAST(NULL AS {src}) AS {dst})")
        except sa.exc.DBAPIError:
            return False
        return True

    return casts


def _in_place(conn: Connection, schema: str) -> Callable[[str, str, str], bool]:
    def in_place(table: str, column: str, new_type: str) -> bool:
        # As alter_column decides it: both types as the server spells them, to pgtypes.
        cat = Catalog(conn)
        live = cat.column(schema, table, column)
        spelled = cat.type_spelling(new_type)
        return live is not None and spelled is not None and rewrites(live.type, spelled) is False

    return in_place


def _current_type(conn: Connection, schema: str) -> Callable[[str, str], str | None]:
    def current(table: str, column: str) -> str | None:
        live = Catalog(conn).column(schema, table, column)
        return live.type if live is not None else None

    return current


@contextmanager
def live_choices(url: str | None, choices: Choices) -> Iterator[Choices]:
    """``choices`` with the database's answers (casts, in-place changes, current types)
    for the length of the block; unchanged without a URL. Read-only: rolled back."""
    if url is None:
        yield choices
        return
    engine = make_engine(url)
    try:
        with connect(engine) as conn:
            choices.casts = _casts(conn)
            choices.in_place = _in_place(conn, "public")
            choices.current_type = _current_type(conn, "public")
            try:
                yield choices
            finally:
                conn.rollback()
    finally:
        engine.dispose()


def _ignore_state(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    # Tables of the database that the models never had and that are no application's:
    # Alembic's own version table.
    return not (type_ == "table" and reflected and compare_to is None and name == "alembic_version")


def compare(
    conn: Connection, metadata: sa.MetaData, schema: str = "public"
) -> list[ops.MigrateOperation]:
    """Alembic's autogenerate operations turning the database's schema into the models'."""
    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_object": _ignore_state,
            "target_metadata": metadata,
        },
    )
    script = produce_migrations(context, metadata)
    assert script.upgrade_ops is not None
    return list(script.upgrade_ops.ops)


def plan_head(plans_dir: Path, release: str) -> str | None:
    """The release a new plan follows: the one plan in the folder no other plan follows."""
    plans: list[Plan] = []
    for path in sorted(plans_dir.glob("*.y*ml")):
        try:
            plans.append(load_plan(path))
        except PlanError:
            continue  # not a plan (a config, a query list)
    if any(p.release == release for p in plans):
        raise UsageError(f"{plans_dir}: a plan of release {release!r} exists already")
    followed = {p.after for p in plans}
    heads = sorted(p.release for p in plans if p.release not in followed)
    if len(heads) > 1:
        raise UsageError(
            f"{plans_dir}: more than one plan is the latest ({', '.join(heads)}): the new plan "
            "cannot tell which it follows; give each plan its `after:`"
        )
    return heads[0] if heads else None


@dataclass
class NewPlan:
    """What `plan new` needs besides the models."""

    release: str
    plans_dir: Path
    database_url: str | None = None
    renames: dict[str, str] = field(default_factory=dict)
    fills: dict[str, str] = field(default_factory=dict)
    search_path: list[str] = field(default_factory=list)
    observer: Observer = NULL_OBSERVER


@contextmanager
def _before_schema(
    request: NewPlan,
    after: str | None,
    scratch: Callable[[], ScratchServer] | None,
    phases: Phases | None,
) -> Iterator[tuple[str, str]]:
    """(url, what it is) of the schema before the release."""
    if request.database_url is not None:
        yield request.database_url, "the live database"
        return
    if scratch is None or phases is None:
        raise UsageError("plan new needs --database-url, or a scratch server to build the schema")
    server = scratch()
    plan = Plan.model_validate({"release": request.release, "after": after})
    name = f"migrator_author_{server.token}"
    try:
        source = before_database(
            plan,
            request.plans_dir / f"{request.release}.yaml",
            server,
            phases,
            name,
            observer=request.observer,
        )
        yield server.url(name), source
    finally:
        server.drop(name)


def draft_from_models(
    target: str,
    request: NewPlan,
    *,
    scratch: Callable[[], ScratchServer] | None = None,
    phases: Phases | None = None,
) -> Draft:
    """The plan that turns the schema before the release into the models' schema."""
    metadata, obj = load_metadata(target, request.search_path)
    after = plan_head(request.plans_dir, request.release)
    draft = Draft(request.release, after)
    with _before_schema(request, after, scratch, phases) as (url, source):
        engine = make_engine(url)
        try:
            with connect(engine) as conn:
                operations = compare(conn, metadata)
                choices = Choices(
                    renames=dict(request.renames),
                    fills=dict(request.fills),
                    casts=_casts(conn),
                    in_place=_in_place(conn, "public"),
                )
                converter = Converter(choices, _source(target, obj))
                converter.convert(operations)
                if converter.problems:
                    raise UsageError(
                        f"--from-models {target}: no safe plan operation for "
                        + "; ".join(reason for _, reason in converter.problems)
                    )
                conn.rollback()
        finally:
            engine.dispose()
    unused = [f"--fill {k}" for k in request.fills if k not in choices.used_fills]
    if unused:
        raise UsageError(
            f"{', '.join(unused)}: no new NOT NULL column of that name in the comparison"
        )
    draft.entries = converter.entries
    draft.header = [
        f"Written by `migrator plan new {request.release} --from-models {target}`,",
        f"comparing the models with {source}. Review it before the release: see",
        "docs/authoring.md for what to check by hand.",
    ]
    return draft


@contextmanager
def scratch_server(scratch_url: str | None, observer: Observer) -> Iterator[ScratchServer]:
    """The server the schema before the release is built on: the one named, else an
    embedded PostgreSQL started for the run and stopped after it."""
    if scratch_url is not None:
        yield ScratchServer(scratch_url)
        return
    observer.info("starting an embedded PostgreSQL to build the schema before the release")
    server = start()
    try:
        scratch = ScratchServer(server.url, single_use=True)
        scratch.make_disposable()
        yield scratch
    finally:
        server.stop()


__all__ = [
    "NewPlan",
    "compare",
    "draft_from_models",
    "load_metadata",
    "plan_head",
    "scratch_server",
]
