"""2026-12-contact-email: contract

Rendered by `migrator render` from plans/2026-12-contact-email.yaml. Change the plan
and render again rather than editing this file.

Revision ID: 82691c58f184
Revises: ffbf4bd95284
"""

from __future__ import annotations

from alembic import context, op

revision = "82691c58f184"
down_revision = "ffbf4bd95284"
branch_labels = None
depends_on = None


def _execute(sql: str) -> None:
    if context.is_offline_mode():
        op.execute(sql)  # --sql: written out
    else:
        # As written, through the driver's cursor: no parsing of ':' or '%'.
        op.get_bind().connection.cursor().execute(sql)


def upgrade() -> None:
    _execute("SET lock_timeout = '1000ms'")
    # 0.rename_column.swap: users.email becomes contact_email; the copy and the trigger go
    _execute('DROP TRIGGER IF EXISTS _migrator_email_contact_email_sync ON public.users')
    _execute('DROP TRIGGER IF EXISTS _migrator_email_contact_email_sync_update ON public.users')
    _execute('DROP FUNCTION IF EXISTS migrator.public_users_email_contact_email_sync()')
    _execute('ALTER TABLE public.users DROP COLUMN contact_email')
    _execute('ALTER TABLE public.users RENAME COLUMN email TO contact_email')
    # c0.drop_column.drop-column: drop column users.legacy_phone
    _execute('ALTER TABLE public.users DROP COLUMN IF EXISTS legacy_phone')


def downgrade() -> None:
    raise RuntimeError('the contract of 2026-12-contact-email dropped what only the old version used; it cannot be undone by a downgrade (restore from a backup, or write a new release)')
