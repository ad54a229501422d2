"""What stands in front of blue and green in the demo: nginx where it is installed,
else a small Python proxy driven by migrator's command backend.

Both run on loopback only. nginx runs as its own master process with a config, pid file
and temp folders in the demo's folder; the proxy reads the percent of traffic on green
from a file that the command backend's shell commands write.
"""

from __future__ import annotations

import http.client
import random
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NGINX_CONF = """\
worker_processes 1;
daemon on;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/upstream.conf;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502;
        }}
    }}
}}
"""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Front:
    """A running front; ``switch`` is the plan's switch backend section for it."""

    port: int
    kind: str
    switch: dict[str, Any]
    stop_callbacks: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        """Stop whatever the front started."""
        for callback in reversed(self.stop_callbacks):
            callback()


def start_nginx(folder: Path, blue_port: int, green_port: int) -> Front:
    """nginx on a free loopback port with an upstream file migrator rewrites."""
    nginx = shutil.which("nginx")
    assert nginx is not None
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "nginx.conf"
    upstream = folder / "upstream.conf"
    upstream.write_text(
        f"# migrator: green=0 blue=100\nupstream api {{\n    server 127.0.0.1:{blue_port};\n}}\n"
    )
    config.write_text(NGINX_CONF.format(folder=folder, port=port, upstream="api"))
    subprocess.run([nginx, "-c", str(config)], check=True, capture_output=True, timeout=30)
    _wait_for_port(port)

    def stop() -> None:
        subprocess.run([nginx, "-c", str(config), "-s", "quit"], capture_output=True, timeout=30)

    switch = {
        "nginx": {
            "upstream_file": str(upstream),
            "upstream": "api",
            "blue": [f"127.0.0.1:{blue_port}"],
            "green": [f"127.0.0.1:{green_port}"],
            "binary": nginx,
            "config": str(config),
        }
    }
    return Front(port, "nginx", switch, [stop])


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    route: Any = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        port = self.route()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(self.command, self.path, body=body, headers=dict(self.headers))
            response = conn.getresponse()
            data = response.read()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            conn.close()

    do_GET = _forward
    do_POST = _forward


def start_proxy(folder: Path, blue_port: int, green_port: int) -> Front:
    """A Python proxy that sends each request to green with the percent in a file."""
    folder.mkdir(parents=True, exist_ok=True)
    split_file = folder / "green-percent"
    split_file.write_text("0\n")
    cache = {"mtime": 0.0, "green": 0}

    def route() -> int:
        mtime = split_file.stat().st_mtime
        if mtime != cache["mtime"]:
            cache.update(mtime=mtime, green=int(split_file.read_text().strip() or 0))
        return green_port if random.random() * 100 < cache["green"] else blue_port

    handler = type("Proxy", (_Proxy,), {"route": staticmethod(route)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    # Write to a temp file and rename, so the proxy never reads half a number.
    tmp = folder / "green-percent.tmp"
    switch = {
        "command": {
            "to_green": f"echo {{percent}} > {tmp} && mv {tmp} {split_file}",
            "to_blue": f"echo 0 > {tmp} && mv {tmp} {split_file}",
            "status": f"cat {split_file}",
            "timeout": "10s",
        }
    }
    return Front(int(server.server_address[1]), "proxy", switch, [stop])


def start_front(
    folder: Path, blue_port: int, green_port: int, *, prefer_nginx: bool = True
) -> Front:
    """nginx where it is installed (and wanted), else the Python proxy."""
    if prefer_nginx and shutil.which("nginx"):
        return start_nginx(folder / "nginx", blue_port, green_port)
    return start_proxy(folder / "proxy", blue_port, green_port)


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")
