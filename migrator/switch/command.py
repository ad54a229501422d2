"""Shell commands, for any load balancer migrator does not know.

`to_green` runs for every step with `{percent}` (and `{blue_percent}`) replaced by the
step's split; `to_blue` moves everything back. `status`, if given, prints the percent
on green. Every command runs in its own process group with a timeout; one that hangs
is killed with its children.
"""

from __future__ import annotations

import os
import signal
import subprocess

from pydantic import Field

from migrator.durations import Duration
from migrator.strict import Strict
from migrator.switch.base import BackendKind, Split, SwitchFailed


class CommandSettings(Strict):
    """Switch with shell commands, for any other load balancer."""

    to_green: str = Field(
        description="moves traffic to green; `{percent}` (and `{blue_percent}`) are replaced "
        "by the step's split"
    )
    to_blue: str = Field(description="moves all traffic back to blue")
    status: str | None = Field(
        default=None,
        description="prints the percent of traffic on green (0-100, or blue/green); without "
        "it the last recorded split is used",
    )
    timeout: Duration = 60.0


class Command:
    """The command backend."""

    name = "command"

    def __init__(self, settings: CommandSettings) -> None:
        self.settings = settings

    def describe(self) -> str:
        """What this backend drives."""
        return f"shell commands (to_green: {self.settings.to_green!r})"

    def run(self, what: str, command: str, split: Split | None = None) -> str:
        """Run one command through the shell; its stdout, or SwitchFailed."""
        if split is not None:
            command = command.replace("{percent}", str(split.green)).replace(
                "{blue_percent}", str(split.blue)
            )
        proc = subprocess.Popen(
            command,
            shell=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, so a timeout kills children too
        )
        try:
            out, err = proc.communicate(timeout=self.settings.timeout)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise SwitchFailed(
                f"command backend: {what} `{command}` did not finish in {self.settings.timeout}s "
                "and was killed"
            ) from exc
        if proc.returncode != 0:
            detail = " ".join((err or out).split())[:500]
            raise SwitchFailed(
                f"command backend: {what} `{command}` failed with exit {proc.returncode}"
                + (f": {detail}" if detail else "")
            )
        return out

    def preflight(self) -> None:
        """The status command, if any, must run and answer."""
        if self.settings.status:
            self.current()

    def current(self) -> Split | None:
        """The status command's answer; None without a status command."""
        if not self.settings.status:
            return None
        answer = self.run("status", self.settings.status).strip().lower()
        if answer in ("blue", "green"):
            return Split(0 if answer == "blue" else 100)
        try:
            value = float(answer.rstrip("%"))
        except ValueError:
            value = -1
        if not 0 <= value <= 100:
            raise SwitchFailed(
                f"command backend: status `{self.settings.status}` printed {answer[:80]!r}; "
                "expected the percent of traffic on green (0-100), or blue, or green"
            )
        return Split(round(value))

    def set_split(self, split: Split) -> Split:
        """to_blue for 0%, else to_green with the percent."""
        if split.green == 0:
            self.run("to_blue", self.settings.to_blue, split)
        else:
            self.run("to_green", self.settings.to_green, split)
        return split

    def after_watch(self) -> None:
        """Nothing to do."""


BACKEND = BackendKind("command", CommandSettings, lambda s, timing, observer: Command(s))
