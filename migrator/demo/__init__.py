"""The demo: the release of BACKGROUND.md on an embedded PostgreSQL, start to finish.

It seeds a users table the way v1 left it, then runs the example plan through expand,
backfill, complete and contract, with v1 still writing between the phases, and checks
the result: every row has its phone, and the column ends NOT NULL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from migrator import commands
from migrator.db.connection import connect, make_engine
from migrator.db.embedded import embedded
from migrator.observer import NULL_OBSERVER, Observer
from migrator.plan.loader import load_plan

PLAN = Path(__file__).with_name("2026-11-add-phone.yaml")

SEED = """
CREATE TABLE users (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    email        text NOT NULL,
    legacy_phone text
);
INSERT INTO users (name, email, legacy_phone)
SELECT 'user ' || g, 'user' || g || '@example.com',
       CASE WHEN g % 10 = 0 THEN NULL ELSE '+1-555-' || lpad(g::text, 7, '0') END
FROM generate_series(1, {rows}) AS g;
"""

# What v1 keeps doing while the release runs: it knows nothing of `phone`.
V1_INSERT = (
    "INSERT INTO users (name, email, legacy_phone) "
    "VALUES ('v1 writer', 'v1@example.com', '+1-555-0000001')"
)


@dataclass
class DemoResult:
    """What the demo ends with."""

    rows: int
    rows_backfilled: int
    rows_without_phone: int
    phone_not_null: bool
    v1_rows_filled_by_trigger: int


def run(*, rows: int = 20_000, observer: Observer = NULL_OBSERVER) -> DemoResult:
    """Run the demo release on a fresh embedded PostgreSQL."""
    observer.info("starting an embedded PostgreSQL ...")
    with embedded() as pg:
        url = pg.url
        engine = make_engine(url)
        try:
            with connect(engine) as conn, conn.begin():
                conn.connection.cursor().execute(SEED.format(rows=int(rows)))
            observer.info(f"seeded users with {rows} rows, as v1 left them")
            plan = load_plan(PLAN)
            opts = commands.Options(database_url=url, observer=observer, actor="demo")

            observer.info("\n[1/4] expand: add users.phone (nullable) and its sync trigger")
            commands.expand(plan, opts)

            with connect(engine) as conn:
                for _ in range(3):
                    conn.execute(text(V1_INSERT))
                conn.commit()
                filled = conn.execute(
                    text(
                        "SELECT count(*) FROM users WHERE name = 'v1 writer' AND phone IS NOT NULL"
                    )
                ).scalar_one()
            observer.info(f"v1 inserted 3 rows after the expand; the trigger filled {filled}")

            observer.info("\n[2/4] backfill: fill phone for the rows already there")
            result = commands.backfill(plan, opts)

            observer.info("\n[3/4] complete: the release is done; its contract is scheduled")
            commands.complete(plan, opts)

            observer.info("\n[4/4] contract: SET NOT NULL the safe way, drop the trigger")
            commands.contract(opts)

            with connect(engine) as conn:
                total = conn.execute(text("SELECT count(*) FROM users")).scalar_one()
                missing = conn.execute(
                    text("SELECT count(*) FROM users WHERE phone IS NULL")
                ).scalar_one()
                not_null = conn.execute(
                    text(
                        "SELECT attnotnull FROM pg_attribute "
                        "WHERE attrelid = 'users'::regclass AND attname = 'phone'"
                    )
                ).scalar_one()
            return DemoResult(
                rows=int(total),
                rows_backfilled=result.rows,
                rows_without_phone=int(missing),
                phone_not_null=bool(not_null),
                v1_rows_filled_by_trigger=int(filled),
            )
        finally:
            engine.dispose()
