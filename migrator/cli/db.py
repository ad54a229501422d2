"""`migrator db start|url|status|stop`: a PostgreSQL to practise on, kept in a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from migrator.cli.common import escape, handled, out
from migrator.errors import GateRefused

db_app = typer.Typer(
    help="A PostgreSQL to practise on: an embedded server kept in a folder.",
    no_args_is_help=True,
)

DEFAULT_DIR = Path(".migrator") / "db"

Folder = Annotated[
    Path,
    typer.Option(
        "--dir", file_okay=False, help="The folder the database lives in.", show_default=True
    ),
]


_ELSEWHERE = (
    "pass --dir with the folder it was started in (the default .migrator/db is in the "
    "working directory of the start)"
)


def _not_running(folder: Path) -> GateRefused:
    return GateRefused(
        f"{folder}: no practice database runs there; `migrator db start` first, or " + _ELSEWHERE
    )


@db_app.command("start")
@handled
def start(
    folder: Folder = DEFAULT_DIR,
    port: Annotated[int, typer.Option(help="The TCP port on 127.0.0.1.")] = 54329,
) -> None:
    """Start the practice database (created on first use; later starts reuse its data)
    and print its URL."""
    from migrator.db import practice

    state = practice.start(folder, port)
    out.print(escape(state.url or ""))


@db_app.command("url")
@handled
def url(folder: Folder = DEFAULT_DIR) -> None:
    """Print the running practice database's URL (exit 3 if it is not running)."""
    from migrator.db import practice

    state = practice.status(folder)
    if state.url is None:
        raise _not_running(state.folder)
    out.print(escape(state.url))


@db_app.command("status")
@handled
def status(folder: Folder = DEFAULT_DIR) -> None:
    """Say whether the practice database runs (exit 0) or not (exit 3)."""
    from migrator.db import practice

    state = practice.status(folder)
    if state.running:
        out.print(
            f"running: {escape(state.url or '')} (pid {state.pid}, {escape(str(state.folder))})"
        )
        return
    if state.initialised:
        out.print(f"stopped: {escape(str(state.folder))}")
    else:
        out.print(
            f"no database yet: {escape(str(state.folder))}; `migrator db start` makes one, "
            f"or, started from another folder, {_ELSEWHERE}"
        )
    raise typer.Exit(3)


@db_app.command("stop")
@handled
def stop(folder: Folder = DEFAULT_DIR) -> None:
    """Stop the practice database; its data stays for the next start."""
    from migrator.db import practice

    before = practice.status(folder)
    state = practice.stop(folder)
    line = f"{'stopped' if before.running else 'not running'}: {escape(str(state.folder))}"
    if not before.initialised:
        # Nothing was ever started here: the server the user means may run on, started
        # from another folder. Still exit 0: a stop with nothing to stop is done.
        line += f"; no practice database is there: started from another folder? {_ELSEWHERE}"
    out.print(line)
