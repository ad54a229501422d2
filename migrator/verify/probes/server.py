"""The server's side of the probes: one PL/pgSQL function runs every probe of a cell in
one round trip, each in a subtransaction that is always undone, and returns what each
gave (a value read, or the error and the function that raised it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

# Each probe runs its statements in a subtransaction that is always undone (a success
# raises MGRZZ to roll it back), so one probe's rows never meet the next's; the error of
# a failing probe is kept with its context (which function raised it).
_PROBE_FUNCTION = """CREATE OR REPLACE FUNCTION pg_temp.migrator_probe(items jsonb)
RETURNS TABLE(k int, value text, state text, message text, context text)
LANGUAGE plpgsql AS $migrator_probe$
DECLARE
  s text;
  ctx text;
BEGIN
  FOR i IN 0 .. jsonb_array_length(items) - 1 LOOP
    k := i; value := NULL; state := NULL; message := NULL; context := NULL;
    BEGIN
      FOR s IN SELECT jsonb_array_elements_text(items -> i -> 'run') LOOP
        EXECUTE s;
      END LOOP;
      IF items -> i ->> 'eval' IS NOT NULL THEN
        EXECUTE items -> i ->> 'eval' INTO value;
      END IF;
      RAISE EXCEPTION USING ERRCODE = 'MGRZZ';
    EXCEPTION WHEN OTHERS THEN
      IF SQLSTATE <> 'MGRZZ' THEN
        GET STACKED DIAGNOSTICS ctx = PG_EXCEPTION_CONTEXT;
        state := SQLSTATE; message := SQLERRM; context := ctx;
      END IF;
    END;
    RETURN NEXT;
  END LOOP;
END
$migrator_probe$"""


@dataclass
class Probe:
    """Statements to run (``run``), then optionally one whose single value is read."""

    run: list[str]
    eval: str | None = None


@dataclass
class Outcome:
    """What a probe gave: the value read, or the error and its context."""

    value: str | None
    state: str | None
    message: str | None
    context: str | None


class ProbesFailed(Exception):
    """The probe function could not run on this server (no TEMP privilege, say)."""


def run_probes(conn: psycopg.Connection[Any], probes: list[Probe]) -> list[Outcome]:
    """Every probe, in one message to the server; the transaction is rolled back.

    A probe's own error is its outcome; `ProbesFailed` when the probing itself fails."""
    if not probes:
        return []
    payload = json.dumps([{"run": p.run, "eval": p.eval} for p in probes])
    message = (
        _PROBE_FUNCTION
        + ";\nSELECT k, value, state, message, context FROM pg_temp.migrator_probe("
        + psycopg.sql.Literal(payload).as_string(conn)
        + "::jsonb) ORDER BY k"
    )
    try:
        with conn.cursor() as cur:
            cur.execute(message.encode())
            cur.nextset()  # past CREATE FUNCTION's result, to the SELECT's
            rows = cur.fetchall()
    except psycopg.Error as exc:
        raise ProbesFailed(str(exc).strip().splitlines()[0]) from exc
    finally:
        conn.rollback()
    return [Outcome(r[1], r[2], r[3], r[4]) for r in rows]


__all__ = ["Outcome", "Probe", "ProbesFailed", "run_probes"]
