-- v2: reads and writes phone, tolerates NULL until the backfill is done.
SELECT id, name, email, coalesce(phone, '') AS phone FROM users WHERE id = $1;

INSERT INTO users (name, email, phone) VALUES ($1, $2, $3) RETURNING id;

UPDATE users SET phone = $1 WHERE id = $2;

SELECT count(*) FROM users WHERE phone IS NOT NULL;
