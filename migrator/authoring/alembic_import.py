"""`plan import alembic`: a plan from existing Alembic revision files, without a database.

Each revision's ``upgrade()`` runs against Alembic's own `Operations` whose ``invoke``
records the operation object instead of running it (an offline `MigrationContext` gives
it a PostgreSQL dialect and no connection), with the file and line of the call. The
recorded operations go through `migrator.authoring.convert` like the autogenerate ones;
``op.execute(sql)`` becomes a `sql` operation.
"""

from __future__ import annotations

import configparser
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations, ops
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError

from migrator.authoring.convert import Choices, Converter
from migrator.authoring.draft import Draft
from migrator.authoring.models import live_choices, plan_head
from migrator.errors import UsageError


class _Recorder:
    """An `Operations` whose ``invoke`` records each operation object (with the file and
    line of the call in the revision) instead of running it."""

    def __init__(self, context: MigrationContext, files: set[str]) -> None:
        self.files = files
        self.recorded: list[tuple[ops.MigrateOperation, str]] = []
        self.operations = Operations(context)
        # Every op.xxx() of Alembic ends in invoke(); an instance attribute replaces it.
        self.operations.invoke = self.invoke  # type: ignore[method-assign]

    def invoke(self, operation: Any) -> Any:
        frame = sys._getframe(1)
        where = "?"
        while frame is not None:
            if frame.f_code.co_filename in self.files:
                where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
                break
            frame = frame.f_back  # type: ignore[assignment]
        self.recorded.append((operation, where))
        return None


def script_location(config: Path | None, given: str | None) -> Path:
    """The revision scripts' folder: --script-location, else alembic.ini's."""
    if given is not None:
        path = Path(given)
    else:
        ini = config or Path("alembic.ini")
        if not ini.is_file():
            raise UsageError(
                f"{ini}: no alembic.ini here; pass --script-location DIR or --alembic-config FILE"
            )
        parser = configparser.ConfigParser(defaults={"here": str(ini.resolve().parent)})
        parser.read(ini)
        value = parser.get("alembic", "script_location", fallback=None)
        if not value:
            raise UsageError(f"{ini}: no script_location in its [alembic] section")
        path = Path(value)
        if not path.is_absolute():
            path = ini.resolve().parent / path
    if not (path / "versions").is_dir() and not path.is_dir():
        raise UsageError(f"{path}: not an Alembic script folder")
    return path


def revisions(location: Path, spec: str | None) -> list[Script]:
    """The revisions of ``REV`` or ``BASE:HEAD`` (BASE excluded), oldest first."""
    try:
        scripts = ScriptDirectory(str(location))
        if spec is None:
            base, head = "base", "heads"
        elif ":" in spec:
            base, head = spec.split(":", 1)
            base, head = base or "base", head or "heads"  # `REV:` is REV to the heads
        else:
            one = scripts.get_revision(spec)
            if one is None:
                raise UsageError(f"revision {spec}: not in {location}")
            return [one]
        found = list(scripts.walk_revisions(base=base, head=head))
        if base != "base":
            # As `alembic upgrade BASE:HEAD --sql`: BASE is where the database already is.
            start = scripts.get_revision(base)
            found = [s for s in found if start is None or s.revision != start.revision]
    except CommandError as exc:
        raise UsageError(f"revisions {spec or 'base:heads'} in {location}: {exc}") from None
    except Exception as exc:  # a revision file that does not load is the user's input
        first = (str(exc).splitlines() or [""])[0]
        raise UsageError(f"{location}: {type(exc).__name__}: {first}") from None
    if not found:
        raise UsageError(f"revisions {spec}: no revision in that range in {location}")
    return list(reversed(found))


def run_upgrade(script: Script, operations: Operations, while_: str) -> None:
    """A revision's upgrade(), its `alembic.op` calls sent to ``operations``; a failure
    is one line naming the file and the revision (``while_``: what the run was doing)."""
    # The `alembic.op` proxy the revision imports points at ``operations`` meanwhile, and
    # `alembic.context` at an offline environment: a revision asking
    # `context.is_offline_mode()` (as `migrator render`'s baseline does) is told True, as
    # under `alembic upgrade --sql`, where it raised NameError for want of a proxy.
    location = Path(script.path).resolve().parent.parent
    environment = EnvironmentContext(Config(), ScriptDirectory(str(location)), as_sql=True)
    operations._install_proxy()
    environment._install_proxy()
    try:
        script.module.upgrade()
    except Exception as exc:
        raise UsageError(
            f"{script.path}: upgrade() of {script.revision} failed while {while_}: "
            f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        ) from None
    finally:
        environment._remove_proxy()
        operations._remove_proxy()


def record(scripts: list[Script]) -> list[tuple[ops.MigrateOperation, str, Script]]:
    """Each revision's upgrade(), recorded."""
    context = MigrationContext.configure(dialect_name="postgresql", opts={"as_sql": True})
    recorded: list[tuple[ops.MigrateOperation, str, Script]] = []
    for script in scripts:
        path = str(script.path)
        recorder = _Recorder(context, {path, str(Path(path).resolve())})
        run_upgrade(script, recorder.operations, "recorded")
        recorded += [(op, where, script) for op, where in recorder.recorded]
    return recorded


@dataclass
class AlembicImport:
    """What `plan import alembic` needs."""

    release: str | None
    plans_dir: Path
    spec: str | None = None
    config: Path | None = None
    location: str | None = None
    fills: dict[str, str] = field(default_factory=dict)
    renames: dict[str, str] = field(default_factory=dict)
    database_url: str | None = None


def draft_from_alembic(request: AlembicImport) -> Draft:
    """The plan doing what the revisions' upgrade() do, in lock-safe forms."""
    location = script_location(request.config, request.location)
    scripts = revisions(location, request.spec)
    recorded = record(scripts)
    release = request.release or f"alembic-{scripts[-1].revision}"
    draft = Draft(release, plan_head(request.plans_dir, release))
    where = {id(op): f"{w} (Alembic revision {s.revision})" for op, w, s in recorded}
    start = Choices(renames=dict(request.renames), fills=dict(request.fills))
    with live_choices(request.database_url, start) as choices:
        converter = Converter(choices, lambda op: "from " + where.get(id(op), "?"))
        converter.convert(op for op, _, _ in recorded)
    if converter.problems:
        at = {id(op): (w, s.revision) for op, w, s in recorded}
        listed = [
            f"{at[id(op)][0]}: revision {at[id(op)][1]}: {reason}"
            for op, reason in converter.problems
        ]
        raise UsageError(
            "no safe equivalent for "
            + "; ".join(listed)
            + " (nothing written; change these revisions or write those steps by hand)"
        )
    unused = [f"--fill {k}" for k in request.fills if k not in choices.used_fills]
    if unused:
        raise UsageError(f"{', '.join(unused)}: no new NOT NULL column of that name")
    draft.entries = converter.entries
    names = ", ".join(s.revision for s in scripts)
    draft.header = [
        f"Written by `migrator plan import alembic` from the revisions {names}",
        f"in {location}. Review it before the release: see docs/authoring.md.",
    ]
    return draft


__all__ = ["AlembicImport", "draft_from_alembic", "record", "revisions", "script_location"]
