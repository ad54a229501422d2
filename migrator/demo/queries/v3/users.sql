-- v3: email is now contact_email; legacy_phone is gone.
SELECT id, name, contact_email, phone FROM users WHERE id = $1;

INSERT INTO users (name, contact_email, phone) VALUES ($1, $2, $3) RETURNING id;

UPDATE users SET contact_email = $1 WHERE id = $2;
