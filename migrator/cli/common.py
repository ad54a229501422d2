"""What every command of the CLI shares: options, output, error handling.

The CLI is the only layer that prints, reads the environment, or imports rich/typer.
Nothing here imports a database or domain library at start-up: a verb does, when it runs.
"""

from __future__ import annotations

import functools
import getpass
import inspect
import json
import os
import re
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TextIO, TypeVar

import typer

from migrator.cli import INTERRUPTED, closed_pipe, reader_gone
from migrator.db.secrets import remember_secrets, scrub_secrets
from migrator.errors import ExitCode, MigratorError, UsageError
from migrator.observer import Observer

if TYPE_CHECKING:
    from rich.console import Console

    from migrator.commands.session import Options
    from migrator.plan.models import Plan


class Output:
    """stdout or stderr as a rich Console, made on first use: rich takes a good part of
    the start-up time, which `--help` and a verb that fails early need not pay."""

    def __init__(self, *, stderr: bool) -> None:
        self.stderr = stderr

    @functools.cached_property
    def console(self) -> Console:
        """The rich Console itself (for a progress bar)."""
        from rich.console import Console

        class _Console(Console):
            def on_broken_pipe(self) -> None:
                # rich's own ends with exit 1, which says "findings" here.
                self.quiet = True
                closed_pipe(self.file)

        return _Console(stderr=self.stderr, highlight=False, soft_wrap=True)

    def print(self, *objects: Any, end: str = "\n") -> None:
        """Console.print: rich markup, escaped where the text is not ours."""
        self.console.print(*objects, end=end)


out = Output(stderr=False)
err = Output(stderr=True)


def escape(text: str) -> str:
    """``text`` with rich markup escaped (rich.markup.escape, imported when first used)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


class Settings:
    """Process-wide CLI settings from the top-level options."""

    debug: bool = False
    # The config file's lint: key (a RuleSettings), set by the root callback on every run.
    lint: Any = None


# Every verb takes --debug after its name too (`migrator expand PLAN --debug`); hidden,
# since the help lists it once, before the verb. `handled` adds it.
_DEBUG = inspect.Parameter(
    "debug",
    inspect.Parameter.KEYWORD_ONLY,
    default=False,
    annotation=Annotated[bool, typer.Option("--debug", hidden=True)],
)


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="MIGRATOR_DATABASE_URL",
        show_envvar=True,
        help="PostgreSQL URL of the target database.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
ScratchUrl = Annotated[
    str | None,
    typer.Option(
        "--scratch-url",
        envvar="MIGRATOR_SCRATCH_URL",
        help="A server where migrator may create and drop scratch databases (default: an "
        "embedded PostgreSQL started for the run).",
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        max=64,
        help="Backfill sessions splitting the table's key range. Other processes running "
        "the same backfill (pods of a Job) join in and share the ranges.",
    ),
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print the SQL it would run; change nothing.")
]
AcceptChangedPlan = Annotated[
    bool,
    typer.Option(
        "--accept-changed-plan", help="Go on although the plan changed after the release started."
    ),
]
Force = Annotated[
    bool, typer.Option("--force", help="Skip a failed gate; needs --reason, which is recorded.")
]
Reason = Annotated[str, typer.Option("--reason", help="Why a gate is forced (recorded).")]
PlanPath = Annotated[
    Path, typer.Argument(help="The release plan (YAML).", show_default=False, metavar="PLAN")
]
AlembicConfig = Annotated[
    Path | None,
    typer.Option("--alembic-config", dir_okay=False, help="alembic.ini (default ./alembic.ini)."),
]
ScriptLocation = Annotated[
    str | None,
    typer.Option("--script-location", help="The revision scripts' folder (over alembic.ini)."),
]


def actor() -> str:
    """Who runs this command, for the audit log."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def cache_dir() -> Path:
    """migrator's cache folder: $XDG_CACHE_HOME/migrator, else ~/.cache/migrator (where
    `check` keeps the embedded server's initdb'd data directory between runs)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "migrator"


class _Scrubbing:
    """A text stream that writes through `scrub_secrets`: no password the process was
    given (a URL, a conninfo string) reaches the terminal, a log or a --json reader."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(scrub_secrets(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


URL_OPTIONS = ("--database-url", "--scratch-url")
URL_VARIABLES = ("MIGRATOR_DATABASE_URL", "MIGRATOR_SCRATCH_URL")


@contextmanager
def scrubbed_output(argv: Sequence[str]) -> Iterator[None]:
    """Run with stdout and stderr scrubbed of the passwords in the URLs given on the
    command line or in MIGRATOR_* variables (and any the core meets later)."""
    for name in URL_VARIABLES:
        remember_secrets(os.environ.get(name, ""))
    for index, arg in enumerate(argv):
        for option in URL_OPTIONS:
            if arg == option and index + 1 < len(argv):
                remember_secrets(argv[index + 1])
            elif arg.startswith(option + "="):
                remember_secrets(arg.split("=", 1)[1])
    saved = sys.stdout, sys.stderr
    sys.stdout = _Scrubbing(sys.stdout)
    sys.stderr = _Scrubbing(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def require_url(url: str | None) -> str:
    """The database URL, or a usage error that says how to give one."""
    if url:
        remember_secrets(url)
    if not url:
        raise UsageError(
            "no database: pass --database-url, set MIGRATOR_DATABASE_URL, or put database_url "
            "in migrator.yaml"
        )
    return url


def read_plan(path: Path) -> Plan:
    """Load a plan (errors carry file:line:column)."""
    from migrator.plan.loader import load_plan

    return load_plan(path)


def parse_pg_version(value: str | None) -> int | None:
    """``15``, ``15.4`` or ``150004`` as server_version_num."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?", value.strip())
    if not match:
        raise UsageError(f"--pg-version {value!r}: expected e.g. 15, 15.4 or 150004")
    major = int(match.group(1))
    if major >= 10000:
        return major
    minor = int(match.group(2) or 0)
    return major * 10000 + minor


def check_force(force: bool, reason: str) -> None:
    """--force needs a reason, which is recorded with the event."""
    if force and not reason.strip():
        raise UsageError("--force needs --reason '...': the reason is recorded in the audit log")


def command_options(
    url: str | None,
    *,
    as_json: bool = False,
    dry_run: bool = False,
    accept: bool = False,
    force: bool = False,
    reason: str = "",
) -> Options:
    """The one place the CLI builds `commands.Options` from its flags: the database URL
    (required), the console observer, the actor, and --force with its reason."""
    from migrator.commands.session import Options

    check_force(force, reason)
    return Options(
        database_url=require_url(url),
        observer=ConsoleObserver(as_json=as_json),
        dry_run=dry_run,
        actor=actor(),
        accept_changed_plan=accept,
        force=force,
        force_reason=reason,
    )


P = ParamSpec("P")
R = TypeVar("R")


def json_lines(func: Callable[P, R]) -> Callable[P, R]:
    """Mark a verb whose ``--json`` streams JSON Lines: one object per event as it happens,
    then one final object, ``{"event": "result", ...}``, or ``{"event": "error", ...}``
    when it fails (`handled` writes that one). Put it below ``@handled``."""
    func.__dict__[_JSON_LINES] = True
    return func


_JSON_LINES = "migrator_json_lines"


def handled(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every failure into one line on stderr and the documented exit code; accept
    --debug after the verb. A `json_lines` verb run with --json also ends its stream with
    the error as a final JSON object, so a reader of stdout alone learns how it ended."""
    streams = bool(func.__dict__.get(_JSON_LINES))

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if kwargs.pop(_DEBUG.name, False):
            Settings.debug = True
        event = streams and bool(kwargs.get("json") or kwargs.get("as_json"))
        try:
            with _interruptible():
                return func(*args, **kwargs)
        except MigratorError as exc:
            _fail(str(exc), exc.exit_code, event)
        except KeyboardInterrupt:
            _fail(INTERRUPTED, ExitCode.INTERRUPTED, event)
        except typer.Exit:
            raise
        except Exception as exc:
            if isinstance(exc, BrokenPipeError) and reader_gone(sys.stdout):
                closed_pipe()
            database = _database_error(exc)
            if database is not None:
                _fail(f"database error: {database}", ExitCode.RUNTIME, event)
            # a bug or an unexpected library error
            _fail(
                f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                ExitCode.RUNTIME,
                event,
            )
        raise AssertionError("unreachable")

    signature = inspect.signature(func, eval_str=True)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), _DEBUG]
    )
    wrapper.__annotations__ = {**func.__annotations__, "debug": _DEBUG.annotation}
    return wrapper


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM (a Kubernetes pod or a CI job being stopped) raise
    KeyboardInterrupt while a verb runs, so the batch or step under way ends or rolls back
    and the exit code says "rerun". Before and after, `main()`'s handler ends the process
    at once: nothing is under way then."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {stop: signal.signal(stop, signal.default_int_handler) for stop in stops}
    try:
        yield
    finally:
        for stop, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(stop, handler)


def _database_error(exc: Exception) -> str | None:
    """One line for an error of SQLAlchemy or psycopg, None for any other. Neither is
    imported for this: an error of theirs means the verb has imported them already."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    psycopg = sys.modules.get("psycopg")
    if (sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.DBAPIError)) or (
        psycopg is not None and isinstance(exc, psycopg.Error)
    ):
        from migrator.db.connection import describe_db_error

        return describe_db_error(exc)
    return None


def _fail(message: str, code: ExitCode, event: bool = False) -> None:
    if Settings.debug:
        err.print(escape(traceback.format_exc()), end="")
    err.print(f"[bold red]error:[/] {escape(message)}")
    if event:
        emit_json({"event": "error", "message": message, "exit_code": int(code)})
    raise typer.Exit(int(code))


def emit_json(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


class ConsoleObserver(Observer):
    """Shows what the core does: rich lines for people, JSON lines with --json."""

    def __init__(self, *, as_json: bool = False, show_sql: bool = True) -> None:
        self.as_json = as_json
        self.show_sql = show_sql

    def _json(self, event: str, **fields: Any) -> None:
        emit_json({"event": event, **fields})

    def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
        if self.as_json:
            self._json("statement", step=step, sql=sql, autocommit=autocommit, dry_run=dry_run)
        elif dry_run:
            out.print(escape(sql.rstrip(";") + ";"))
        elif self.show_sql:
            out.print(f"    [dim]{escape(_one_line(sql))}[/]")

    def step_started(self, step: str, description: str) -> None:
        if self.as_json:
            self._json("step", step=step, description=description, status="running")
        else:
            out.print(f"  [cyan]→[/] {escape(step)}: {escape(description)}")

    def step_skipped(self, step: str, description: str) -> None:
        if self.as_json:
            self._json("step", step=step, description=description, status="skipped")
        else:
            out.print(f"  [dim]✓ {escape(step)}: already done[/]")

    def step_done(self, step: str, description: str, seconds: float) -> None:
        if self.as_json:
            self._json("step", step=step, status="done", seconds=seconds)

    def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
        if self.as_json:
            self._json("retry", step=step, attempt=attempt, wait=wait, reason=reason)
        else:
            err.print(
                f"  [yellow]…[/] {escape(step)}: {escape(reason)}; retry {attempt} in {wait:.2f}s"
            )

    def progress(self, task: str, done: int, total: int | None, **extra: Any) -> None:
        if self.as_json:
            self._json("progress", task=task, done=done, total=total, **extra)

    def info(self, message: str) -> None:
        if self.as_json:
            self._json("info", message=message)
        else:
            out.print(escape(message))

    def warning(self, message: str) -> None:
        if self.as_json:
            self._json("warning", message=message)
        else:
            err.print(f"[yellow]warning:[/] {escape(message)}")


def _one_line(sql: str) -> str:
    first = " ".join(sql.split())
    return first if len(first) <= 160 else first[:157] + "..."
