"""2026-12-contact-email: expand

Rendered by `migrator render` from plans/2026-12-contact-email.yaml. Change the plan
and render again rather than editing this file.
Note: rename_column users.email: contact_email is NULL on existing rows until the backfill copies them; the new version reads it, so run the backfill before the switch (`migrator switch` waits for it; `migrator release` runs it first)

Revision ID: ffbf4bd95284
Revises: 0c289bd6931b
"""

from __future__ import annotations

from alembic import context, op

revision = "ffbf4bd95284"
down_revision = "0c289bd6931b"
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
    # migrator-schema: migrator's own schema, for trigger functions
    _execute('CREATE SCHEMA IF NOT EXISTS migrator')
    # 0.rename_column.add-column: add users.contact_email beside email
    _execute('ALTER TABLE public.users ADD COLUMN contact_email text')
    # 0.rename_column.sync-trigger: trigger keeping users.email and contact_email in step
    _execute("""CREATE OR REPLACE FUNCTION migrator.public_users_email_contact_email_sync() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $migrator$
DECLARE
  email text := NEW.email;
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.contact_email IS NULL THEN
      NEW.contact_email := (email);
    ELSIF NEW.contact_email IS DISTINCT FROM (email) THEN
    DECLARE
      email text := NEW.contact_email;
    BEGIN
      NEW.email := (email);
    END;
    END IF;
  ELSIF NEW.contact_email IS DISTINCT FROM OLD.contact_email THEN
    -- the new version wrote the shadow; a value that agrees with the old column
    -- (the backfill) leaves the old column as it is
    IF NEW.contact_email IS DISTINCT FROM (email) THEN
    DECLARE
      email text := NEW.contact_email;
    BEGIN
      NEW.email := (email);
    END;
    END IF;
  ELSIF (NEW.email IS DISTINCT FROM OLD.email) OR (NEW.contact_email IS NULL AND NEW.email IS NOT NULL) THEN
    -- the old version wrote, or the row is not backfilled yet
    NEW.contact_email := (email);
  END IF;
  RETURN NEW;
END
$migrator$""")
    _execute('REVOKE EXECUTE ON FUNCTION migrator.public_users_email_contact_email_sync() FROM PUBLIC')
    _execute('DROP TRIGGER IF EXISTS _migrator_email_contact_email_sync ON public.users')
    _execute('DROP TRIGGER IF EXISTS _migrator_email_contact_email_sync_update ON public.users')
    _execute('CREATE TRIGGER _migrator_email_contact_email_sync BEFORE INSERT ON public.users FOR EACH ROW EXECUTE FUNCTION migrator.public_users_email_contact_email_sync()')
    _execute('CREATE TRIGGER _migrator_email_contact_email_sync_update BEFORE UPDATE ON public.users FOR EACH ROW WHEN ((NEW.contact_email IS DISTINCT FROM OLD.contact_email AND NEW.contact_email IS DISTINCT FROM (new.email)) OR (NOT (NEW.contact_email IS DISTINCT FROM OLD.contact_email) AND (NEW.email IS DISTINCT FROM OLD.email OR (NEW.contact_email IS NULL AND NEW.email IS NOT NULL)))) EXECUTE FUNCTION migrator.public_users_email_contact_email_sync()')
    # 0.rename_column.backfill: copy users.email to contact_email (batches, each committed)
    with op.get_context().autocommit_block():
        _execute("""DO $migrator$
DECLARE
  _migrator_last bigint;
  _migrator_batch bigint[];
BEGIN
  LOOP
    SELECT array_agg(id ORDER BY id) INTO _migrator_batch FROM (
      SELECT id FROM public.users
      WHERE _migrator_last IS NULL OR id > _migrator_last
      ORDER BY id LIMIT 1000) AS _migrator_keys;
    EXIT WHEN _migrator_batch IS NULL;
    UPDATE public.users SET contact_email = (email)
    WHERE id = ANY (_migrator_batch) AND (contact_email IS DISTINCT FROM email);
    _migrator_last := _migrator_batch[array_length(_migrator_batch, 1)];
    COMMIT;
  END LOOP;
END
$migrator$""")


def downgrade() -> None:
    _execute("SET lock_timeout = '1000ms'")
    # 0.rename_column.drop-column: drop users.contact_email, its trigger and index copies
    _execute('DROP TRIGGER IF EXISTS _migrator_email_contact_email_sync ON public.users')
    _execute('DROP TRIGGER IF EXISTS _migrator_email_contact_email_sync_update ON public.users')
    _execute('DROP FUNCTION IF EXISTS migrator.public_users_email_contact_email_sync()')
    _execute('ALTER TABLE public.users DROP COLUMN IF EXISTS contact_email')
