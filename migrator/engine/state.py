"""The state store: schema ``migrator`` in the target database.

Rules live in the database as constraints: a partial unique index allows one release
in flight, another keeps history linear (each release follows at most one other).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, RowMapping, text
from sqlalchemy.exc import IntegrityError

from migrator.db.connection import scrub_secrets, scrub_value

SCHEMA_VERSION = 1


class ReleasePhase(StrEnum):
    """Where a release is; the state store keeps the value (a plain string) in
    ``migrator.releases.phase``, and JSON output shows it as that string."""

    EXPANDING = "expanding"
    EXPANDED = "expanded"
    SWITCHING = "switching"
    SWITCHED = "switched"
    BACKFILLING = "backfilling"
    BACKFILLED = "backfilled"
    COMPLETED = "completed"
    CONTRACTING = "contracting"
    CONTRACTED = "contracted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


P = ReleasePhase
PHASES = tuple(ReleasePhase)
# The groups the gates ask about.
# No longer in flight: another release may start (the one-in-flight index).
FINISHED_PHASES = (P.COMPLETED, P.CONTRACTING, P.CONTRACTED, P.ROLLED_BACK)
# The expand is applied and the release not completed: both versions can run.
EXPANDED_PHASES = (P.EXPANDED, P.SWITCHING, P.SWITCHED, P.BACKFILLING, P.BACKFILLED)
# The order expand and backfill move a release forward in (never back).
FORWARD_PHASES = (P.EXPANDING, *EXPANDED_PHASES)
# A run of expand or rollback stopped part way: the schema is neither before nor after.
HALF_APPLIED_PHASES = (P.EXPANDING, P.ROLLING_BACK)
# The expand is not (wholly) applied: backfill, switch and complete refuse.
NOT_EXPANDED_PHASES = (*HALF_APPLIED_PHASES, P.ROLLED_BACK)
# The phases a switch moves the release between, and those with traffic moved to green.
SWITCH_PHASES = (P.EXPANDED, P.SWITCHING, P.SWITCHED)
ON_GREEN_PHASES = (P.SWITCHING, P.SWITCHED)
# No traffic has gone to green yet, so the schema may still be rolled back.
ROLLBACK_PHASES = (P.EXPANDING, P.EXPANDED, P.BACKFILLING, P.BACKFILLED, P.ROLLING_BACK)
# Completed: the contract is scheduled, may be running, or has run.
COMPLETED_PHASES = (P.COMPLETED, P.CONTRACTING, P.CONTRACTED)
# The contract may run (again).
CONTRACT_DUE_PHASES = (P.COMPLETED, P.CONTRACTING)
# The contract has started: the old version could no longer work with the schema.
CONTRACTED_PHASES = (P.CONTRACTING, P.CONTRACTED)
del P

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS migrator;
CREATE TABLE IF NOT EXISTS migrator.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS migrator.releases (
    name         text PRIMARY KEY,
    after        text,
    plan         jsonb NOT NULL,
    plan_hash    text NOT NULL,
    phase        text NOT NULL CHECK (phase IN ({", ".join(f"'{p}'" for p in PHASES)})),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS releases_one_in_flight ON migrator.releases ((true))
    WHERE phase NOT IN ({", ".join(f"'{p}'" for p in FINISHED_PHASES)});
CREATE UNIQUE INDEX IF NOT EXISTS releases_linear_history
    ON migrator.releases ((coalesce(after, ''))) WHERE phase <> '{ReleasePhase.ROLLED_BACK}';
CREATE TABLE IF NOT EXISTS migrator.steps (
    release     text NOT NULL REFERENCES migrator.releases (name) ON DELETE CASCADE,
    phase       text NOT NULL,
    key         text NOT NULL,
    position    integer NOT NULL,
    description text NOT NULL,
    status      text NOT NULL CHECK (status IN ('running', 'done', 'failed', 'undone')),
    attempts    integer NOT NULL DEFAULT 0,
    started_at  timestamptz,
    finished_at timestamptz,
    error       text,
    checkpoint  jsonb,
    PRIMARY KEY (release, phase, key)
);
CREATE TABLE IF NOT EXISTS migrator.contracts (
    release      text NOT NULL REFERENCES migrator.releases (name) ON DELETE CASCADE,
    position     integer NOT NULL,
    key          text NOT NULL,
    description  text NOT NULL,
    statements   jsonb NOT NULL,
    not_before   timestamptz NOT NULL,
    conditions   jsonb NOT NULL DEFAULT '{{}}',
    status       text NOT NULL DEFAULT 'scheduled'
                 CHECK (status IN ('scheduled', 'running', 'done', 'failed')),
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz,
    error        text,
    PRIMARY KEY (release, key)
);
CREATE TABLE IF NOT EXISTS migrator.events (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    release   text,
    actor     text NOT NULL,
    action    text NOT NULL,
    plan_hash text,
    details   jsonb NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS migrator.backfill_ranges (
    release    text NOT NULL,
    phase      text NOT NULL DEFAULT 'backfill',
    key        text NOT NULL,
    n          integer NOT NULL,
    lo         jsonb,
    hi         jsonb,
    position   jsonb,
    pass       smallint NOT NULL DEFAULT 2,
    status     text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done')),
    rows       bigint NOT NULL DEFAULT 0,
    batches    integer NOT NULL DEFAULT 0,
    worker     text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (release, phase, key, n),
    FOREIGN KEY (release, phase, key) REFERENCES migrator.steps (release, phase, key)
        ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS migrator.query_baseline (
    release text NOT NULL REFERENCES migrator.releases (name) ON DELETE CASCADE,
    queryid bigint NOT NULL,
    calls   bigint NOT NULL,
    PRIMARY KEY (release, queryid)
);
INSERT INTO migrator.meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}')
    ON CONFLICT (key) DO NOTHING;
"""

# What a state schema made by an earlier migrator lacks; each statement checks first, so
# a run that finds it done takes no lock.
_UPGRADES = (
    # The backfill's passes (migrator.backfill.runner): databases initialised before
    # them have ranges walked in one.
    """DO $migrator$
BEGIN
  IF NOT EXISTS (
    SELECT FROM pg_attribute
    WHERE attrelid = 'migrator.backfill_ranges'::regclass AND attname = 'pass'
      AND NOT attisdropped
  ) THEN
    ALTER TABLE migrator.backfill_ranges ADD COLUMN pass smallint NOT NULL DEFAULT 2;
  END IF;
END
$migrator$""",
)

# Where a release is, for applications (any role): `SELECT * FROM
# migrator.release_phase('r1')` gives its phase and whether its backfill has run to the
# end; no row for an unknown release. SECURITY DEFINER so no one needs SELECT on the
# state tables; made only where missing, so a rerun takes no lock.
_FUNCTIONS = (
    f"""DO $migrator$
BEGIN
  IF to_regprocedure('migrator.release_phase(text)') IS NULL THEN
    CREATE FUNCTION migrator.release_phase(release text)
      RETURNS TABLE (phase text, backfill_done boolean)
      LANGUAGE sql STABLE SECURITY DEFINER
      SET search_path = pg_catalog, pg_temp
    AS $fn$
      SELECT r.phase,
             r.phase IN ({", ".join(f"'{p}'" for p in (ReleasePhase.BACKFILLED, *COMPLETED_PHASES))})
             OR (EXISTS (SELECT FROM migrator.steps s
                         WHERE s.release = r.name AND s.phase = 'backfill')
                 AND NOT EXISTS (SELECT FROM migrator.steps s
                                 WHERE s.release = r.name AND s.phase = 'backfill'
                                   AND s.status <> 'done'))
      FROM migrator.releases r
      WHERE r.name = release_phase.release
    $fn$;
    GRANT EXECUTE ON FUNCTION migrator.release_phase(text) TO PUBLIC;
    GRANT USAGE ON SCHEMA migrator TO PUBLIC;
  END IF;
END
$migrator$""",
    # The schema's USAGE is PUBLIC's for release_phase; every other function there (the
    # sync triggers', made by an earlier migrator with PostgreSQL's default PUBLIC
    # EXECUTE) is the owner's only. Operations revoke it as they make one
    # (sqltext.private_function_sql); ALTER DEFAULT PRIVILEGES IN SCHEMA cannot, since
    # the default is built in. Only where one is left, so a rerun takes no lock.
    """DO $migrator$
DECLARE f regprocedure;
BEGIN
  FOR f IN
    SELECT p.oid::regprocedure FROM pg_proc p
    WHERE p.pronamespace = 'migrator'::regnamespace
      AND p.oid <> 'migrator.release_phase(text)'::regprocedure
      AND has_function_privilege('public', p.oid, 'EXECUTE')
  LOOP
    -- (regprocedure's text is quoted; no format(): these run with and without parameters)
    EXECUTE 'REVOKE EXECUTE ON FUNCTION ' || f::text || ' FROM PUBLIC';
  END LOOP;
END
$migrator$""",
)


_INSERT_EVENT = text(
    "INSERT INTO migrator.events (release, actor, action, plan_hash, details) "
    "VALUES (:r, :a, :ac, :h, CAST(:d AS jsonb))"
)
# After a crash, a sequence can come back behind ids it handed out (a database copied
# from a template holds the template's pre-logged values with no WAL of its own): it is
# moved past the highest id, so the log never stops a command.
_ADVANCE_EVENTS_ID = text(
    "SELECT setval(pg_get_serial_sequence('migrator.events', 'id'), "
    "greatest((SELECT max(id) FROM migrator.events), "
    "nextval(pg_get_serial_sequence('migrator.events', 'id'))))"
)


def append_event(
    conn: Connection,
    release: str | None,
    actor: str,
    action: str,
    plan_hash: str | None,
    details: Any,
) -> None:
    """One row of migrator.events, in a savepoint of ``conn``'s transaction: a duplicate
    id (the sequence went back) advances the sequence past the log and tries once more."""
    values = {
        "r": release,
        "a": actor,
        "ac": action,
        "h": plan_hash,
        "d": json.dumps(details, default=str),
    }
    try:
        with conn.begin_nested():
            conn.execute(_INSERT_EVENT, values)
    except IntegrityError as exc:
        if getattr(getattr(exc.orig, "diag", None), "constraint_name", None) != "events_pkey":
            raise
        conn.execute(_ADVANCE_EVENTS_ID)
        conn.execute(_INSERT_EVENT, values)


@dataclass(frozen=True)
class Release:
    """A release as the state store has it."""

    name: str
    after: str | None
    plan: dict[str, Any]
    plan_hash: str
    phase: ReleasePhase
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class StepRecord:
    """One recorded step."""

    release: str
    phase: str
    key: str
    position: int
    description: str
    status: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    checkpoint: dict[str, Any] | None


@dataclass(frozen=True)
class ContractRecord:
    """One scheduled contract step."""

    release: str
    position: int
    key: str
    description: str
    statements: list[dict[str, Any]]
    not_before: datetime
    conditions: dict[str, Any]
    status: str
    error: str | None
    done_at: datetime | None


def _release(row: RowMapping) -> Release:
    return Release(**{**row, "phase": ReleasePhase(row["phase"])})


class StateStore:
    """Reads and writes the state schema; every method takes the connection to use,
    so a step's record commits in the same transaction as the step itself."""

    def exists(self, conn: Connection) -> bool:
        """True once `migrator init` has run on this database."""
        return conn.execute(text("SELECT to_regclass('migrator.releases')")).scalar() is not None

    def init(self, conn: Connection) -> None:
        """Create the state schema; running it again changes nothing."""
        for statement in _DDL.split(";\n"):
            if statement.strip():
                conn.execute(text(statement).execution_options(no_parameters=True))
        for statement in (*_UPGRADES, *_FUNCTIONS):
            conn.execute(text(statement).execution_options(no_parameters=True))

    # -- releases ----------------------------------------------------------------------

    def release(self, conn: Connection, name: str) -> Release | None:
        """One release, or None."""
        row = (
            conn.execute(text("SELECT * FROM migrator.releases WHERE name = :n"), {"n": name})
            .mappings()
            .first()
        )
        return _release(row) if row else None

    def releases(self, conn: Connection) -> list[Release]:
        """Every release, oldest first."""
        rows = conn.execute(
            text("SELECT * FROM migrator.releases ORDER BY created_at, name")
        ).mappings()
        return [_release(r) for r in rows]

    def in_flight(self, conn: Connection) -> Release | None:
        """The release in flight, if any."""
        row = (
            conn.execute(
                text("SELECT * FROM migrator.releases WHERE phase <> ALL(:done)"),
                {"done": [str(p) for p in FINISHED_PHASES]},
            )
            .mappings()
            .first()
        )
        return _release(row) if row else None

    def latest(self, conn: Connection) -> Release | None:
        """The newest release that was not rolled back."""
        row = (
            conn.execute(
                text(
                    "SELECT * FROM migrator.releases WHERE phase <> :rolled_back "
                    "ORDER BY created_at DESC, name DESC LIMIT 1"
                ),
                {"rolled_back": str(ReleasePhase.ROLLED_BACK)},
            )
            .mappings()
            .first()
        )
        return _release(row) if row else None

    def start_release(
        self,
        conn: Connection,
        release: str,
        after: str | None,
        plan: dict[str, Any],
        plan_hash: str,
    ) -> None:
        """Insert the release, or reopen a rolled-back one (its old steps are cleared).

        ``plan`` is the plan's canonical document, ``plan_hash`` its digest.
        """
        params = {
            "n": release,
            "a": after,
            "p": json.dumps(plan),
            "h": plan_hash,
            "rolled_back": str(ReleasePhase.ROLLED_BACK),
            "expanding": str(ReleasePhase.EXPANDING),
        }
        conn.execute(
            text(
                "DELETE FROM migrator.steps WHERE release = :n AND EXISTS "
                "(SELECT 1 FROM migrator.releases WHERE name = :n AND phase = :rolled_back)"
            ),
            params,
        )
        conn.execute(
            text(
                "INSERT INTO migrator.releases (name, after, plan, plan_hash, phase) "
                "VALUES (:n, :a, CAST(:p AS jsonb), :h, :expanding) "
                "ON CONFLICT (name) DO UPDATE SET plan = EXCLUDED.plan, "
                "plan_hash = EXCLUDED.plan_hash, after = EXCLUDED.after, updated_at = now(), "
                "phase = CASE WHEN migrator.releases.phase = :rolled_back THEN :expanding "
                "ELSE migrator.releases.phase END"
            ),
            params,
        )

    def update_plan(
        self, conn: Connection, release: str, plan: dict[str, Any], plan_hash: str
    ) -> None:
        """Store a changed plan the user accepted (its canonical document and digest)."""
        conn.execute(
            text(
                "UPDATE migrator.releases SET plan = CAST(:p AS jsonb), plan_hash = :h, "
                "updated_at = now() WHERE name = :n"
            ),
            {"p": json.dumps(plan), "h": plan_hash, "n": release},
        )

    def set_phase(self, conn: Connection, release: str, phase: ReleasePhase) -> None:
        """Move a release to a phase."""
        conn.execute(
            text(
                "UPDATE migrator.releases SET phase = :p, updated_at = now(), "
                "completed_at = CASE WHEN :completing THEN now() ELSE completed_at END "
                "WHERE name = :n"
            ),
            {"p": str(phase), "n": release, "completing": phase == ReleasePhase.COMPLETED},
        )

    # -- steps ---------------------------------------------------------------------------

    def steps(self, conn: Connection, release: str, phase: str | None = None) -> list[StepRecord]:
        """Recorded steps of a release (of one phase when given), in order."""
        rows = conn.execute(
            text(
                "SELECT * FROM migrator.steps WHERE release = :r "
                "AND (CAST(:p AS text) IS NULL OR phase = :p) ORDER BY phase, position"
            ),
            {"r": release, "p": phase},
        ).mappings()
        return [StepRecord(**r) for r in rows]

    def step_status(self, conn: Connection, release: str, phase: str) -> dict[str, str]:
        """key -> status for one phase."""
        return {s.key: s.status for s in self.steps(conn, release, phase)}

    def mark_step(
        self,
        conn: Connection,
        release: str,
        phase: str,
        key: str,
        position: int,
        description: str,
        status: str,
        error: str | None = None,
    ) -> None:
        """Record a step's status (running, done, failed, undone)."""
        conn.execute(
            text(
                "INSERT INTO migrator.steps (release, phase, key, position, description, "
                "status, attempts, started_at, finished_at, error) VALUES (:r, :ph, :k, :pos, "
                ":d, :s, 1, now(), CASE WHEN :s IN ('done', 'failed') THEN now() END, :e) "
                "ON CONFLICT (release, phase, key) DO UPDATE SET status = EXCLUDED.status, "
                "position = EXCLUDED.position, description = EXCLUDED.description, "
                "error = EXCLUDED.error, "
                "attempts = migrator.steps.attempts + CASE WHEN EXCLUDED.status = 'running' "
                "THEN 1 ELSE 0 END, "
                "started_at = CASE WHEN EXCLUDED.status = 'running' THEN now() "
                "ELSE migrator.steps.started_at END, "
                "finished_at = CASE WHEN EXCLUDED.status IN ('done', 'failed') THEN now() END"
            ),
            {
                "r": release,
                "ph": phase,
                "k": key,
                "pos": position,
                "d": description,
                "s": status,
                # No password reaches the audit: an error may quote a connection string.
                "e": scrub_secrets(error) if error else error,
            },
        )

    def checkpoint(self, conn: Connection, release: str, phase: str, key: str) -> dict[str, Any]:
        """A step's stored checkpoint (see `save_checkpoint`); empty when it has none."""
        value = conn.execute(
            text(
                "SELECT checkpoint FROM migrator.steps "
                "WHERE release = :r AND phase = :p AND key = :k"
            ),
            {"r": release, "p": phase, "k": key},
        ).scalar()
        return dict(value) if isinstance(value, dict) else {}

    def save_checkpoint(
        self, conn: Connection, release: str, phase: str, key: str, checkpoint: dict[str, Any]
    ) -> None:
        """Store a step's checkpoint (a backfill's last key and rows done)."""
        conn.execute(
            text(
                "UPDATE migrator.steps SET checkpoint = CAST(:c AS jsonb) "
                "WHERE release = :r AND phase = :p AND key = :k"
            ),
            {"c": json.dumps(checkpoint, default=str), "r": release, "p": phase, "k": key},
        )

    def undo_phase(self, conn: Connection, release: str, phase: str) -> None:
        """Mark a phase's steps undone (after a rollback)."""
        conn.execute(
            text("UPDATE migrator.steps SET status = 'undone' WHERE release = :r AND phase = :p"),
            {"r": release, "p": phase},
        )

    # -- contracts -----------------------------------------------------------------------

    def schedule_contract(
        self,
        conn: Connection,
        release: str,
        position: int,
        key: str,
        description: str,
        statements: list[dict[str, Any]],
        not_before_seconds: float,
        conditions: dict[str, Any],
    ) -> None:
        """Schedule one contract step (rescheduling an existing one changes nothing)."""
        conn.execute(
            text(
                "INSERT INTO migrator.contracts (release, position, key, description, "
                "statements, not_before, conditions) VALUES (:r, :pos, :k, :d, "
                "CAST(:s AS jsonb), now() + make_interval(secs => :nb), CAST(:c AS jsonb)) "
                "ON CONFLICT (release, key) DO NOTHING"
            ),
            {
                "r": release,
                "pos": position,
                "k": key,
                "d": description,
                "s": json.dumps(statements),
                "nb": not_before_seconds,
                "c": json.dumps(conditions),
            },
        )

    def contracts(self, conn: Connection, release: str | None = None) -> list[ContractRecord]:
        """Scheduled contract steps, by release and position."""
        rows = conn.execute(
            text(
                "SELECT c.release, c.position, c.key, c.description, c.statements, "
                "c.not_before, c.conditions, c.status, c.error, c.done_at FROM migrator.contracts c "
                "JOIN migrator.releases r ON r.name = c.release "
                "WHERE CAST(:r AS text) IS NULL OR c.release = :r "
                "ORDER BY r.created_at, c.release, c.position"
            ),
            {"r": release},
        ).mappings()
        return [ContractRecord(**r) for r in rows]

    def mark_contract(
        self, conn: Connection, release: str, key: str, status: str, error: str | None = None
    ) -> None:
        """Record a contract step's status."""
        conn.execute(
            text(
                "UPDATE migrator.contracts SET status = :s, error = :e, "
                "done_at = CASE WHEN :s = 'done' THEN now() END "
                "WHERE release = :r AND key = :k"
            ),
            {"s": status, "e": scrub_secrets(error) if error else error, "r": release, "k": key},
        )

    # -- events --------------------------------------------------------------------------

    def event(
        self,
        conn: Connection,
        actor: str,
        action: str,
        release: str | None = None,
        plan_hash: str | None = None,
        **details: Any,
    ) -> None:
        """Append to the audit log."""
        append_event(conn, release, actor, action, plan_hash, scrub_value(details))

    def events(self, conn: Connection, release: str | None = None) -> list[dict[str, Any]]:
        """The audit log, oldest first."""
        rows = conn.execute(
            text(
                "SELECT id, at, release, actor, action, plan_hash, details "
                "FROM migrator.events WHERE CAST(:r AS text) IS NULL OR release = :r ORDER BY id"
            ),
            {"r": release},
        ).mappings()
        return [dict(r) for r in rows]
