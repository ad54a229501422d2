"""2026-11-add-phone: expand

Rendered by `migrator render` from plans/2026-11-add-phone.yaml. Change the plan
and render again rather than editing this file.

Revision ID: fa487a3f6239
Revises: 83027736f00f
"""

from __future__ import annotations

from alembic import context, op

revision = "fa487a3f6239"
down_revision = "83027736f00f"
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
    # 0.add_column.add-column: add users.phone
    _execute('ALTER TABLE public.users ADD COLUMN phone text')
    # 0.add_column.sync-trigger: trigger filling users.phone on old-version writes
    _execute("""CREATE OR REPLACE FUNCTION migrator.public_users_phone_sync() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $migrator$
DECLARE
  id public.users.id%TYPE := NEW.id;
  name public.users.name%TYPE := NEW.name;
  email public.users.email%TYPE := NEW.email;
  legacy_phone public.users.legacy_phone%TYPE := NEW.legacy_phone;
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.phone IS NULL THEN
      NEW.phone := (coalesce(legacy_phone, ''));
    END IF;
  ELSIF (NEW.phone IS NULL AND OLD.phone IS NULL) OR (NEW.phone IS NOT DISTINCT FROM OLD.phone AND (NEW.legacy_phone IS DISTINCT FROM OLD.legacy_phone)) THEN
    NEW.phone := (coalesce(legacy_phone, ''));
  END IF;
  RETURN NEW;
END
$migrator$""")
    _execute('REVOKE EXECUTE ON FUNCTION migrator.public_users_phone_sync() FROM PUBLIC')
    _execute('DROP TRIGGER IF EXISTS _migrator_phone_sync ON public.users')
    _execute('DROP TRIGGER IF EXISTS _migrator_phone_sync_update ON public.users')
    _execute('CREATE TRIGGER _migrator_phone_sync BEFORE INSERT ON public.users FOR EACH ROW WHEN (NEW.phone IS NULL) EXECUTE FUNCTION migrator.public_users_phone_sync()')
    _execute('CREATE TRIGGER _migrator_phone_sync_update BEFORE UPDATE ON public.users FOR EACH ROW WHEN ((NEW.phone IS NULL AND OLD.phone IS NULL) OR (NEW.phone IS NOT DISTINCT FROM OLD.phone AND (NEW.legacy_phone IS DISTINCT FROM OLD.legacy_phone))) EXECUTE FUNCTION migrator.public_users_phone_sync()')
    # 0.add_column.backfill: fill users.phone (batches, each committed)
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
    UPDATE public.users SET phone = (coalesce(legacy_phone, ''))
    WHERE id = ANY (_migrator_batch) AND (phone IS NULL);
    _migrator_last := _migrator_batch[array_length(_migrator_batch, 1)];
    COMMIT;
  END LOOP;
END
$migrator$""")


def downgrade() -> None:
    _execute("SET lock_timeout = '1000ms'")
    # 0.add_column.drop-sync-trigger: drop the sync trigger on users
    _execute('DROP TRIGGER IF EXISTS _migrator_phone_sync ON public.users')
    _execute('DROP TRIGGER IF EXISTS _migrator_phone_sync_update ON public.users')
    _execute('DROP FUNCTION IF EXISTS migrator.public_users_phone_sync()')
    # 0.add_column.drop-column: drop users.phone
    _execute('ALTER TABLE IF EXISTS public.users DROP COLUMN IF EXISTS phone')
