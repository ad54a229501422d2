-- v1 of the users service: knows legacy_phone, not phone.
SELECT id, name, email, legacy_phone FROM users WHERE id = $1;

INSERT INTO users (name, email, legacy_phone) VALUES ($1, $2, $3) RETURNING id;

UPDATE users SET legacy_phone = $1 WHERE id = $2;

SELECT count(*) FROM users;
