"""Grants given again by the shadow-column operations keep their grantor, on PostgreSQL 18
and 15: a privilege that a role other than the owner granted (gr_admin, holding the grant
option on a column, on the whole table or on the identity's sequence) is given again as
that role (SET LOCAL ROLE), so the catalog records the same grantor before the expand,
on the expand's new columns, and after the contract's swap. GRANTED BY cannot do it:
PostgreSQL takes only the current user there, on 15 and 18 alike (checked below).
"""

from __future__ import annotations

import psycopg
import pytest

from migrator import commands
from migrator.plan.loader import parse_plan
from tests.support.ops_suite import BASE, opts, plan_text, q

# The roles are the cluster's, made once per server.
SETUP = (
    BASE
    + """
DO $$ BEGIN CREATE ROLE gr_admin; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE gr_app; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE TABLE tokens (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, code text, email text);
INSERT INTO tokens (code, email) SELECT g::text, 'u' || g || '@example.com'
FROM generate_series(1, 20) g;
GRANT USAGE ON SCHEMA public TO gr_admin, gr_app;
GRANT SELECT (code, email) ON tokens TO gr_admin WITH GRANT OPTION;
GRANT UPDATE ON tokens TO gr_admin WITH GRANT OPTION;
GRANT USAGE ON SEQUENCE tokens_id_seq TO gr_admin WITH GRANT OPTION;
SET ROLE gr_admin;
GRANT SELECT (code, email), UPDATE (code, email) ON tokens TO gr_app;
GRANT USAGE ON SEQUENCE tokens_id_seq TO gr_app;
RESET ROLE;
"""
)
ACL = (
    "SELECT a.attname::text, x.privilege_type, pg_get_userbyid(x.grantee)::text, "
    "pg_get_userbyid(x.grantor)::text, x.is_grantable "
    "FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) x "
    "WHERE a.attrelid = 'tokens'::regclass AND NOT a.attisdropped UNION ALL "
    "SELECT 'sequence', x.privilege_type, pg_get_userbyid(x.grantee)::text, "
    "pg_get_userbyid(x.grantor)::text, x.is_grantable FROM pg_class c "
    "CROSS JOIN LATERAL aclexplode(c.relacl) x "
    "WHERE c.oid = pg_get_serial_sequence('tokens', 'id')::regclass AND x.grantee <> c.relowner"
)
PLAN = """
- alter_column: {table: tokens, column: id, type: bigint}
- alter_column: {table: tokens, column: code, type: int}
- rename_column: {table: tokens, from: email, to: contact_email}
"""


def _by_column(url: str) -> dict[str, set[tuple[object, ...]]]:
    found: dict[str, set[tuple[object, ...]]] = {}
    for row in q(url, ACL):
        found.setdefault(str(row[0]), set()).add(row[1:])
    return found


def test_regranted_privileges_keep_their_grantor(db: str) -> None:
    q(db, SETUP)
    before = _by_column(db)
    # What the setup made: gr_admin's grants to gr_app, recorded as gr_admin's.
    assert ("SELECT", "gr_app", "gr_admin", False) in before["code"]
    assert ("USAGE", "gr_app", "gr_admin", False) in before["sequence"]
    plan = parse_plan(plan_text(PLAN, lock_timeout="5s"))
    commands.expand(plan, opts(db))
    expanded = _by_column(db)
    new_columns = sorted(
        (sorted(map(str, acl)) for name, acl in expanded.items() if name not in before),
    )
    # Each new column (the two shadows and the new name) has its column's grants, with
    # their grantors: code's shadow code's, the new name email's; id has none.
    assert new_columns == sorted(sorted(map(str, before[c])) for c in ("code", "email"))
    commands.backfill(plan, opts(db))
    commands.complete(plan, opts(db))
    commands.contract(opts(db))
    after = _by_column(db)
    assert after == {
        "code": before["code"],
        "contact_email": before["email"],
        "sequence": before["sequence"],
    }


def test_granted_by_takes_only_the_current_user(db: str) -> None:
    """Why the grants are made as their grantor and not with GRANTED BY: PostgreSQL
    refuses any role but the current user there (feature_not_supported), on 15 and 18,
    a superuser's GRANT too."""
    q(db, SETUP)
    with psycopg.connect(db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="grantor must be current"):
            conn.execute("GRANT SELECT (code) ON tokens TO gr_app GRANTED BY gr_admin")
