"""A steady load through the front while the release runs, counting every failure."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadStats:
    """What the load saw."""

    served: int = 0
    failed: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


class Load:
    """Reads and writes through the front from a few threads, until stopped.

    Bounded: each thread sends at most one request every ``interval`` seconds, to
    127.0.0.1 only.
    """

    def __init__(self, port: int, max_id: int, *, threads: int = 2, interval: float = 0.005):
        self.base = f"http://127.0.0.1:{port}"
        self.max_id = max_id
        self.interval = interval
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def start(self) -> Load:
        """Start the threads."""
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> LoadStats:
        """Stop and return the counts."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return self.stats

    def _record(self, ok: bool, version: str, why: str = "") -> None:
        with self._lock:
            if ok:
                self.stats.served += 1
                self.stats.by_version[version] += 1
            else:
                self.stats.failed += 1
                if len(self.stats.failures) < 20:
                    self.stats.failures.append(why)

    def _run(self, n: int) -> None:
        rng = random.Random(n)
        # A new connection per request: a graceful nginx reload closes idle keep-alive
        # connections, and a client that reuses one meets a reset before its request is
        # read. Real clients retry that (HTTP allows it for idempotent requests); counting
        # it here would count nginx's reload, not the release. docs/switch.md has the
        # keep-alive figures.
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.base, timeout=10.0, limits=limits) as client:
            count = 0
            while not self._stop.is_set():
                count += 1
                try:
                    if count % 4 == 0:
                        response = client.post(
                            "/users",
                            json={
                                "name": f"load {n}-{count}",
                                "email": f"load{n}-{count}@example.com",
                                "phone": f"+1-555-{n}{count:06d}",
                            },
                        )
                    else:
                        response = client.get(f"/users/{rng.randint(1, self.max_id)}")
                    version = response.json().get("version", "?")
                    ok = response.status_code < 500
                    self._record(
                        ok, version, "" if ok else f"{response.status_code} {response.text[:200]}"
                    )
                except (httpx.HTTPError, ValueError) as exc:
                    self._record(False, "?", f"{type(exc).__name__}: {exc}")
                time.sleep(self.interval)
