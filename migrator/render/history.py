"""Keeping alembic_version right when `migrator` runs the phases itself.

A team already on Alembic renders its plans (`migrator render`) and may then run a
release with `migrator expand` / `contract` instead of `alembic upgrade`. So that
`alembic current` and the next `alembic upgrade head` still agree with the database,
migrator moves alembic_version along its own chain of revisions (the ids are derived
from release and phase, see `migrator.render.revisions.revision_id`):

- after the expand of R: to R's expand revision, from the previous release's contract
  revision (or from whatever head the team had, for a first release);
- after the contract of R: to R's contract revision, from R's expand revision; and on to
  the expand revision of a release that follows R and was expanded meanwhile (the
  contract of one release usually runs after the next one started);
- after the rollback of R: back to what it was before R's expand (recorded in the audit
  log when the expand moved it).

Only when the table exists (so a team not on Alembic gets none), and only from the value
it expects: anything else is left alone and reported as a warning. The move runs in the
transaction of the phase's last step, and again (idempotently) after the phase, so a
crash between the two is repaired by the rerun.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, text

from migrator.engine.state import NOT_EXPANDED_PHASES, append_event
from migrator.observer import Observer
from migrator.render.revisions import revision_id

# Moves alembic_version in the transaction of the step that changed the schema.
StampRecorder = Callable[[Connection], None]

_ACTION = "alembic.stamp"


def _table(conn: Connection) -> str | None:
    """alembic_version as the connection's search_path finds it, or None."""
    value = conn.execute(text("SELECT to_regclass('alembic_version')::text")).scalar()
    return str(value) if value else None


def _current(conn: Connection, table: str) -> list[str]:
    return [str(r[0]) for r in conn.execute(text(f"SELECT version_num FROM {table}")).all()]


def _set(conn: Connection, table: str, value: str | None) -> None:
    conn.execute(text(f"DELETE FROM {table}"))
    if value is not None:
        conn.execute(text(f"INSERT INTO {table} (version_num) VALUES (:v)"), {"v": value})


def _record(conn: Connection, release: str, previous: str | None, revision: str) -> None:
    append_event(
        conn, release, "migrator", _ACTION, None, {"previous": previous, "revision": revision}
    )


def after_expand(release: str, after: str | None, observer: Observer) -> StampRecorder:
    """The move to R's expand revision, to run in the last expand step's transaction."""
    target = revision_id(release, "expand")

    def move(conn: Connection) -> None:
        table = _table(conn)
        if table is None:
            return
        current = _current(conn, table)
        if current == [target]:
            return
        now = current[0] if len(current) == 1 else None
        if after is not None and now != revision_id(after, "contract"):
            if now == revision_id(after, "expand"):
                observer.info(
                    f"alembic_version stays at {now}: the contract of {after} has not run yet; "
                    f"it moves to {target} when it has"
                )
            else:
                observer.warning(
                    f"alembic_version is at {', '.join(current) or 'nothing'}, not at the "
                    f"contract of {after} ({revision_id(after, 'contract')}); left alone"
                )
            return
        if len(current) > 1:
            observer.warning(
                f"alembic_version has {len(current)} heads ({', '.join(current)}); left alone"
            )
            return
        _set(conn, table, target)
        _record(conn, release, now, target)

    return move


def after_contract(release: str, observer: Observer) -> StampRecorder:
    """The move to R's contract revision (and on, to a later expand already run)."""

    def move(conn: Connection) -> None:
        table = _table(conn)
        if table is None:
            return
        current = _current(conn, table)
        if current != [revision_id(release, "expand")]:
            if current != [revision_id(release, "contract")]:
                observer.warning(
                    f"alembic_version is at {', '.join(current) or 'nothing'}, not at the "
                    f"expand of {release}; left alone"
                )
            return
        target = revision_id(release, "contract")
        follower = conn.execute(
            text(
                "SELECT name FROM migrator.releases WHERE after = :r "
                "AND phase <> ALL(:not_expanded)"
            ),
            {"r": release, "not_expanded": [str(p) for p in NOT_EXPANDED_PHASES]},
        ).scalar()
        if follower is not None:
            target = revision_id(str(follower), "expand")
            _record(conn, str(follower), revision_id(release, "contract"), target)
        _set(conn, table, target)

    return move


def after_rollback(release: str, observer: Observer) -> StampRecorder:
    """The move back to what alembic_version was before R's expand moved it."""

    def move(conn: Connection) -> None:
        table = _table(conn)
        if table is None or _current(conn, table) != [revision_id(release, "expand")]:
            return
        details = conn.execute(
            text(
                "SELECT details FROM migrator.events WHERE release = :r AND action = :a "
                "AND details ->> 'revision' = :v ORDER BY id DESC LIMIT 1"
            ),
            {"r": release, "a": _ACTION, "v": revision_id(release, "expand")},
        ).scalar()
        if details is None:
            observer.warning(
                f"alembic_version is at the expand of {release}, but migrator did not move it "
                "there; left alone"
            )
            return
        previous = details.get("previous") if isinstance(details, dict) else None
        _set(conn, table, previous)

    return move
