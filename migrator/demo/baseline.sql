-- The schema the first release (2026-11-add-phone) starts from: the users table as
-- v1 left it. `migrator render plans/2026-11-add-phone.yaml plans/2026-12-contact-email.yaml
-- --baseline plans/baseline.sql` renders the releases on top of it into migrations/.
CREATE TABLE users (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    email        text NOT NULL,
    legacy_phone text
);
