-- Staged key rotation: a key is published as soon as it is stored and signs only from
-- activates_at, so every instance's JWKS carries it before any token does. Keys stored before
-- this change were active from their creation.
ALTER TABLE signing_keys ADD COLUMN activates_at BIGINT NOT NULL DEFAULT 0;
UPDATE signing_keys SET activates_at = created_at;

-- Bumped in the same transaction as every change to signing_keys: instances poll this one row
-- and re-read the keys only when it moved.
CREATE TABLE key_version (
    id       INTEGER  PRIMARY KEY NOT NULL CHECK (id = 1),
    version  BIGINT   NOT NULL
);
INSERT INTO key_version (id, version) VALUES (1, 1);
