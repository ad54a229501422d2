"""nginx: rewrite an upstream file atomically, test the config, reload.

The file is replaced with a temp file + rename, so nginx never reads half a file;
`nginx -t` runs before the reload, and a config it refuses is replaced by the previous
file again, so a bad switch leaves nginx exactly as it was. Weighted steps use
`weight=` on each server line. nginx's reload is graceful: old workers finish their
requests while new ones take new connections, so no request is lost.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from pydantic import Field

from migrator.durations import Duration
from migrator.errors import GateRefused
from migrator.strict import Strict
from migrator.switch.base import ALL_BLUE, ALL_GREEN, BackendKind, Split, SwitchFailed


class NginxSettings(Strict):
    """Switch by rewriting an nginx upstream file and reloading nginx."""

    upstream_file: str
    upstream: str
    blue: list[str] = Field(min_length=1)
    green: list[str] = Field(min_length=1)
    binary: str = Field(default="nginx", description="the nginx executable")
    config: str | None = Field(
        default=None, description="nginx's main config file (-c), for the test and the reload"
    )
    test_command: str | None = Field(default=None, description="replaces `nginx [-c config] -t`")
    reload_command: str | None = Field(
        default=None, description="replaces `nginx [-c config] -s reload`"
    )
    timeout: Duration = Field(default=30.0, description="for the test and the reload")
    pid_file: str | None = Field(
        default=None,
        description="nginx's pid file, to wait until new workers took over after a reload "
        "(default: the `pid` of the main config, else /run/nginx.pid)",
    )


_MARK = "# migrator: green="
_MARK_RE = re.compile(r"^# migrator: green=(\d{1,3})\b", re.MULTILINE)
_SERVER_RE = re.compile(r"^\s*server\s+([^\s;]+)", re.MULTILINE)
_PID_RE = re.compile(r"^\s*pid\s+([^;]+);", re.MULTILINE)


def render(settings: NginxSettings, split: Split) -> str:
    """The upstream block for a split, with a comment that records the split."""
    lines = [
        f"{_MARK}{split.green} blue={split.blue} (written by migrator switch; do not edit)",
        f"upstream {settings.upstream} {{",
    ]
    if split.green == 0:
        lines += [f"    server {s};" for s in settings.blue]
    elif split.green == 100:
        lines += [f"    server {s};" for s in settings.green]
    else:
        # Per-server weights so that each pool gets its share whatever its size:
        # blue servers get blue% * len(green), green servers green% * len(blue).
        nb, ng = len(settings.blue), len(settings.green)
        wb, wg = split.blue * ng, split.green * nb
        common = math.gcd(wb, wg)
        lines += [f"    server {s} weight={wb // common};" for s in settings.blue]
        lines += [f"    server {s} weight={wg // common};" for s in settings.green]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _live_workers(master: int) -> set[int]:
    """The master's worker processes that still accept connections (Linux /proc)."""
    workers: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if int(stat.rsplit(")", 1)[1].split()[1]) != master:
            continue
        if "worker process" in cmdline and "shutting down" not in cmdline:
            workers.add(int(proc.name))
    return workers


class Nginx:
    """The nginx backend."""

    name = "nginx"

    def __init__(self, settings: NginxSettings) -> None:
        self.settings = settings
        self.path = Path(settings.upstream_file)

    def describe(self) -> str:
        """What this backend drives."""
        return f"nginx upstream {self.settings.upstream} in {self.path}"

    def _nginx(self, *args: str) -> list[str]:
        cmd = [self.settings.binary]
        if self.settings.config:
            cmd += ["-c", self.settings.config]
        return cmd + list(args)

    def _run(self, what: str, custom: str | None, default: list[str]) -> None:
        cmd = shlex.split(custom) if custom else default
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.settings.timeout, check=False
            )
        except FileNotFoundError as exc:
            raise SwitchFailed(f"nginx {what}: {cmd[0]} not found ({exc.strerror})") from exc
        except subprocess.TimeoutExpired as exc:
            raise SwitchFailed(
                f"nginx {what}: `{shlex.join(cmd)}` did not finish in {self.settings.timeout}s"
            ) from exc
        if proc.returncode != 0:
            output = " ".join((proc.stderr or proc.stdout).split())
            raise SwitchFailed(
                f"nginx {what} failed (`{shlex.join(cmd)}` exit {proc.returncode}): {output}"
            )

    def test_config(self) -> None:
        """`nginx -t`: raise SwitchFailed with nginx's own words if it refuses."""
        self._run("config test", self.settings.test_command, self._nginx("-t", "-q"))

    def reload(self) -> None:
        """Graceful reload, then wait until every old worker is shutting down (it has
        stopped accepting) and a new one runs: only then is the new split in force.
        `nginx -s reload` itself only sends a signal and returns at once."""
        master = self._master_pid()
        old = _live_workers(master) if master else set()
        self._run("reload", self.settings.reload_command, self._nginx("-s", "reload"))
        if not master or not old:
            return  # no way to watch this nginx's workers; the signal was sent
        deadline = time.monotonic() + self.settings.timeout
        while True:
            live = _live_workers(master)
            if live and not live & old:
                # The title changes just before the old worker closes its listening
                # sockets; a moment's grace covers that.
                time.sleep(0.01)
                return
            if time.monotonic() > deadline:
                raise SwitchFailed(
                    f"nginx reload: no new worker took over within {self.settings.timeout}s "
                    f"(master {master}; see nginx's error log)"
                )
            time.sleep(0.005)

    def _master_pid(self) -> int | None:
        path = self.settings.pid_file
        if path is None and self.settings.config:
            try:
                match = _PID_RE.search(Path(self.settings.config).read_text())
            except OSError:
                match = None
            path = match.group(1).strip() if match else None
        try:
            return int(Path(path or "/run/nginx.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def preflight(self) -> None:
        """The upstream file's folder exists, the file is ours (or absent), nginx accepts it."""
        if not self.path.parent.is_dir():
            raise GateRefused(
                f"nginx: folder {self.path.parent} of upstream_file does not exist",
                gate="backend-ready",
            )
        if self.path.exists() and self.current() is None:
            raise GateRefused(
                f"nginx: {self.path} lists neither exactly the blue servers nor exactly the "
                "green ones, and was not written by migrator; make it list the blue servers",
                gate="backend-ready",
            )
        self.test_config()

    def current(self) -> Split | None:
        """The split recorded in the file; None if the file is missing or not ours."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        match = _MARK_RE.search(text)
        if match:
            return Split(int(match.group(1))) if int(match.group(1)) <= 100 else None
        # A file written by hand: all blue or all green if it lists exactly one pool.
        servers = set(_SERVER_RE.findall(text))
        if servers == set(self.settings.blue):
            return ALL_BLUE
        if servers == set(self.settings.green):
            return ALL_GREEN
        return None

    def set_split(self, split: Split) -> Split:
        """Write the file atomically, `nginx -t`, reload; restore the old file on failure."""
        previous = self.path.read_text() if self.path.exists() else None
        write_atomically(self.path, render(self.settings, split))
        try:
            self.test_config()
            self.reload()
        except SwitchFailed:
            if previous is None:
                self.path.unlink(missing_ok=True)
            else:
                write_atomically(self.path, previous)
            raise
        return split

    def after_watch(self) -> None:
        """Nothing to retire: the blue servers are simply not in the upstream."""


BACKEND = BackendKind("nginx", NginxSettings, lambda s, timing, observer: Nginx(s))

__all__ = [
    "ALL_BLUE",
    "ALL_GREEN",
    "BACKEND",
    "Nginx",
    "NginxSettings",
    "render",
    "write_atomically",
]
