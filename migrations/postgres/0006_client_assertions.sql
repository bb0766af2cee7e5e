-- Client assertions (`private_key_jwt`) already used: each is accepted once, on any instance.
-- The key is a SHA-256 over the client id and the assertion's `jti`; a row is kept until the
-- assertion has expired (plus the allowed clock skew), when replaying it fails anyway.
CREATE TABLE client_assertions (
    jti_hash    TEXT    NOT NULL PRIMARY KEY,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX client_assertions_expiry ON client_assertions (expires_at);
