"""2026-11-add-phone: contract

Rendered by `migrator render` from plans/2026-11-add-phone.yaml. Change the plan
and render again rather than editing this file.

Revision ID: 0c289bd6931b
Revises: fa487a3f6239
"""

from __future__ import annotations

from alembic import context, op

revision = "0c289bd6931b"
down_revision = "fa487a3f6239"
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
    # 0.add_column.not-null-check: CHECK (phone IS NOT NULL) NOT VALID
    _execute('ALTER TABLE public.users ADD CONSTRAINT _migrator_users_phone_not_null CHECK (phone IS NOT NULL) NOT VALID')
    # 0.add_column.validate-not-null: validate the NOT NULL check on users
    _execute('ALTER TABLE public.users VALIDATE CONSTRAINT _migrator_users_phone_not_null')
    # 0.add_column.set-not-null: SET NOT NULL on users.phone (no scan: the check proves it)
    _execute('ALTER TABLE public.users ALTER COLUMN phone SET NOT NULL')
    _execute('ALTER TABLE public.users DROP CONSTRAINT IF EXISTS _migrator_users_phone_not_null')
    # 0.add_column.drop-sync-trigger: drop the sync trigger on users
    _execute('DROP TRIGGER IF EXISTS _migrator_phone_sync ON public.users')
    _execute('DROP TRIGGER IF EXISTS _migrator_phone_sync_update ON public.users')
    _execute('DROP FUNCTION IF EXISTS migrator.public_users_phone_sync()')


def downgrade() -> None:
    raise RuntimeError('the contract of 2026-11-add-phone dropped what only the old version used; it cannot be undone by a downgrade (restore from a backup, or write a new release)')
