"""A real HAProxy for the switch tests and bench/switch.py, on loopback.

`HAProxyServer` runs Debian's haproxy in the foreground (-db) with its own config in a
temp dir: one frontend on a free 127.0.0.1 port, one backend `api` holding the blue
servers (weight 100) and the green ones (weight 0, as an operator would set them up
before a first switch), health-checked every 100 ms, and the runtime API on a unix
socket (and on a loopback TCP port) at level admin.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.switch_env import free_port

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
NO_HAPROXY = "haproxy is not installed (apt-get install haproxy; .ci/run installs it)"

_CONF = """\
global
    stats socket {d}/admin.sock mode 600 level admin
    stats socket ipv4@127.0.0.1:{admin_port} level {tcp_level}
    stats timeout 10s
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    # A fresh connection to the server per request: a kept-alive one the small test
    # servers closed meanwhile would fail a request that no switch caused.
    option http-server-close
    retries 2
    option redispatch
frontend fe
    bind 127.0.0.1:{port}
    default_backend api
backend api
    balance {balance}
{servers}
"""


class HAProxyServer:
    """A test-owned haproxy process with blue servers at weight 100, green at 0."""

    def __init__(
        self,
        blue: dict[str, str],
        green: dict[str, str],
        *,
        balance: str = "roundrobin",
        tcp_level: str = "admin",
        extra: str = "",
    ) -> None:
        assert HAPROXY is not None, NO_HAPROXY
        self.dir = Path(tempfile.mkdtemp(prefix="migrator-haproxy-"))
        self.port = free_port()
        self.admin_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket = str(self.dir / "admin.sock")
        self.tcp_socket = f"127.0.0.1:{self.admin_port}"
        self.blue, self.green = list(blue), list(green)
        lines = [f"    server {n} {a} weight 100 check inter 100ms" for n, a in blue.items()]
        lines += [f"    server {n} {a} weight 0 check inter 100ms" for n, a in green.items()]
        lines += [f"    {line}" for line in extra.splitlines() if line.strip()]
        self.config = self.dir / "haproxy.cfg"
        self.config.write_text(
            _CONF.format(
                d=self.dir,
                port=self.port,
                admin_port=self.admin_port,
                tcp_level=tcp_level,
                balance=balance,
                servers="\n".join(lines),
            )
        )
        self.log = self.dir / "haproxy.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        # Up when the frontend accepts and every server has had its first check.
        self.wait_for(
            lambda: (
                self._accepts()
                and all(self.state(n)["srv_check_result"] != "0" for n in self.blue + self.green)
            ),
            "haproxy to start",
        )

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                pass
            return self.command("show cli level").strip() == "admin"
        except OSError:
            return False

    def wait_for(self, ready: Callable[[], bool], what: str, limit: float = 20.0) -> None:
        """Poll until `ready()`; the limit only turns a hang into a failure."""
        deadline = time.monotonic() + limit
        while not ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: {self.log.read_text()}")
            time.sleep(0.02)

    def command(self, line: str) -> str:
        """One runtime API command, its answer."""
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(self.socket)
            conn.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def state(self, server: str) -> dict[str, str]:
        """The server's line of `show servers state api`, by column."""
        lines = self.command("show servers state api").splitlines()
        columns = lines[1].lstrip("#").split()
        for line in lines[2:]:
            row = dict(zip(columns, line.split(), strict=False))
            if row.get("srv_name") == server:
                return row
        raise KeyError(server)

    def weights(self) -> dict[str, tuple[int, str]]:
        """Each server's live weight and admin state (ready, drain, maint)."""
        out = {}
        for name in self.blue + self.green:
            row = self.state(name)
            admin = int(row["srv_admin_state"])
            mode = "maint" if admin & 0x23 else "drain" if admin & 0x18 else "ready"
            out[name] = (int(row["srv_uweight"]), mode)
        return out

    def backend_settings(self, **extra: Any) -> dict[str, Any]:
        """The plan's `haproxy:` section for this server."""
        return {
            "socket": self.socket,
            "backend": "api",
            "blue": self.blue,
            "green": self.green,
            **extra,
        }

    def reload(self) -> None:
        """What a config reload does to runtime changes: a new process from the config
        file (the runtime weights are gone)."""
        assert HAPROXY is not None
        self.stop(keep_dir=True)
        self._log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(self.config)], stdout=self._log, stderr=subprocess.STDOUT
        )
        self.wait_for(self._accepts, "haproxy to restart")

    def stop(self, keep_dir: bool = False) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
