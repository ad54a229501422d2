"""A small users service in two versions, for the demo: v1 knows legacy_phone, v2 phone.

Run as ``python -m migrator.demo.app --version v1 --port 8001 --database-url URL``.
Each version runs its own queries (the query sets under migrator/demo/queries) and names
its connections ``api-v1`` / ``api-v2``, so `migrator contract` can tell when v1 is gone.
v2's ``/stats`` is a code path gated on the release itself: it counts the users with a
phone only once ``migrator.release_phase()`` says the backfill is done (before that the
count would be wrong, and the endpoint says it is pending).
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg

QUERIES = {
    "v1": {
        "get": "SELECT id, name, email, legacy_phone FROM users WHERE id = %s",
        "insert": "INSERT INTO users (name, email, legacy_phone) VALUES (%s, %s, %s) RETURNING id",
        "health": "SELECT count(*) FROM users WHERE legacy_phone IS NULL AND false",
    },
    "v2": {
        "get": "SELECT id, name, email, coalesce(phone, '') AS phone FROM users WHERE id = %s",
        "insert": "INSERT INTO users (name, email, phone) VALUES (%s, %s, %s) RETURNING id",
        "health": "SELECT count(*) FROM users WHERE phone IS NULL AND false",
        "phones": "SELECT count(*) FROM users WHERE phone IS NOT NULL",
    },
}

# Where the release is, as the database tells it (migrator's function, granted to PUBLIC).
RELEASE_PHASE = "SELECT phase, backfill_done FROM migrator.release_phase(%s)"
RELEASE = "2026-11-add-phone"


class App:
    """One version of the service: a connection per thread, the version's queries."""

    def __init__(self, version: str, database_url: str) -> None:
        self.version = version
        self.url = database_url
        self.queries = QUERIES[version]
        self.local = threading.local()

    def conn(self) -> psycopg.Connection[Any]:
        conn = getattr(self.local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(
                self.url, autocommit=True, application_name=f"api-{self.version}"
            )
            self.local.conn = conn
        return conn

    def run(self, name: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.execute(self.queries[name], *params)

    def execute(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        try:
            return self.conn().execute(sql, params or None).fetchall()
        except psycopg.OperationalError:
            self.local.conn = None  # reconnect next time
            raise

    def stats(self) -> dict[str, Any]:
        """v2's phone count, served once the release says its backfill is done."""
        rows = self.execute(RELEASE_PHASE, RELEASE)
        phase, filled = rows[0] if rows else (None, False)
        if not filled:
            return {"phones": None, "phase": phase, "pending": "backfill"}
        return {"phones": self.run("phones")[0][0], "phase": phase}


def handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the demo prints its own summary

        def reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps({"version": app.version, **body}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            try:
                if self.path == "/healthz":
                    app.run("health")
                    self.reply(200, {"ok": True})
                elif self.path == "/stats" and "phones" in app.queries:
                    self.reply(200, app.stats())
                elif self.path.startswith("/users/"):
                    rows = app.run("get", int(self.path.rsplit("/", 1)[1]))
                    self.reply(
                        200 if rows else 404, {"user": [str(v) for v in rows[0]] if rows else None}
                    )
                else:
                    self.reply(404, {"error": "no such path"})
            except Exception as exc:  # the demo counts failures; say why
                self.reply(500, {"error": str(exc).splitlines()[0]})

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                (row,) = app.run("insert", body["name"], body["email"], body.get("phone"))
                self.reply(201, {"id": row[0]})
            except Exception as exc:
                self.reply(500, {"error": str(exc).splitlines()[0]})

    return Handler


def serve(version: str, port: int, database_url: str) -> None:
    """Serve one version on 127.0.0.1:port until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler(App(version, database_url)))
    server.daemon_threads = True
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", choices=sorted(QUERIES), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    serve(args.version, args.port, args.database_url)


if __name__ == "__main__":
    main()
