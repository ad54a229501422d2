"""baseline: the schema the first release starts from

Rendered by `migrator render` from baseline.sql.

Revision ID: 83027736f00f
Revises: 
"""

from __future__ import annotations

from alembic import context, op

revision = "83027736f00f"
down_revision = None
branch_labels = None
depends_on = None

BASELINE = """-- The schema the first release (2026-11-add-phone) starts from: the users table as
-- v1 left it. `migrator render plans/2026-11-add-phone.yaml plans/2026-12-contact-email.yaml
-- --baseline plans/baseline.sql` renders the releases on top of it into migrations/.
CREATE TABLE users (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    email        text NOT NULL,
    legacy_phone text
);
"""


def upgrade() -> None:
    if context.is_offline_mode():
        op.execute(BASELINE)
        return
    # The whole file in one simple-protocol call, as psql would send it; then the
    # session's search_path back (pg_dump files empty it).
    cursor = op.get_bind().connection.cursor()
    cursor.execute(BASELINE)
    cursor.execute('RESET search_path')


def downgrade() -> None:
    raise RuntimeError('the baseline cannot be downgraded: it would drop the schema')
