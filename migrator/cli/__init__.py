"""The `migrator` command line: Typer over the plain functions of migrator.commands.

`main()` is the entry point. This module stays small and imports nothing heavy, so that
`main()` owns Ctrl-C before Typer, rich or a verb's libraries load: an interrupt at
start-up is one line and exit 5 as it is later. The app itself is in `root.py`; each verb
imports what it needs when it runs.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from typing import IO, TYPE_CHECKING, Any, NoReturn

from migrator.errors import ExitCode

if TYPE_CHECKING:
    from types import FrameType

    from migrator.cli.root import app as app

INTERRUPTED = "interrupted; run the same command again to resume"
CLOSED_PIPE = 128 + 13
"""The exit status of a writer whose reader left (what a shell shows for SIGPIPE)."""


def stop_at_once(signum: int, frame: FrameType | None) -> None:
    """SIGINT/SIGTERM outside a running verb: nothing is under way that needs unwinding,
    and a KeyboardInterrupt in the middle of an import would end in a traceback."""
    os.write(2, f"error: {INTERRUPTED}\n".encode())
    os._exit(ExitCode.INTERRUPTED)


def reader_gone(stream: IO[str]) -> bool:
    """Whether ``stream`` is a pipe whose reading end is closed (poll says POLLERR)."""
    try:
        poll = select.poll()
        poll.register(stream.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll(), or not a file
        return False


def closed_pipe(stream: IO[str] | None = None) -> NoReturn:
    """End quietly because the reader of stdout (or ``stream``) is gone:
    `migrator plan schema | head -1`."""
    # The interpreter flushes the stream on its way out; into /dev/null it cannot fail again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (stream or sys.stdout).fileno())
    except (OSError, ValueError):  # not a file (a test runner's buffer)
        pass
    raise SystemExit(CLOSED_PIPE)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGINT, stop_at_once)
    signal.signal(signal.SIGTERM, stop_at_once)
    from migrator.cli.root import run

    run()


def __getattr__(name: str) -> Any:
    # `from migrator.cli import app` (the tests' way in) builds the app on first use only.
    if name == "app":
        from migrator.cli.root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
