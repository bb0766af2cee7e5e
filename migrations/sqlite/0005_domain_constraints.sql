-- The domain model's rules, held by the database too: a pending request says what it is for
-- (`purpose`) and its upstream secrets exist only at the upstream stage; codes and refresh tokens
-- belong to a grant that exists. Tables are rebuilt (SQLite cannot add constraints in place);
-- rows that could not have been written by authgate are not carried over.

CREATE TABLE pending_authorizations_v5 (
    id_hash              TEXT    PRIMARY KEY NOT NULL,
    browser_hash         TEXT    NOT NULL,
    purpose              TEXT    NOT NULL CHECK (purpose IN ('authorize', 'account')),
    client_id            TEXT    NOT NULL,
    redirect_uri         TEXT    NOT NULL,
    state                TEXT,
    code_challenge       TEXT    NOT NULL,
    scope                TEXT    NOT NULL,
    resource             TEXT    NOT NULL,
    status               TEXT    NOT NULL CHECK (status IN ('consent', 'upstream', 'done')),
    upstream_state_hash  TEXT,
    upstream_nonce       TEXT,
    upstream_verifier    TEXT,
    created_at           BIGINT  NOT NULL,
    expires_at           BIGINT  NOT NULL,
    CHECK (purpose <> 'authorize' OR (client_id <> '' AND length(code_challenge) = 43)),
    CHECK (purpose <> 'account' OR (client_id = '' AND status <> 'consent')),
    CHECK (status <> 'upstream' OR (upstream_state_hash IS NOT NULL AND upstream_nonce IS NOT NULL AND upstream_verifier IS NOT NULL)),
    CHECK (status = 'upstream' OR (upstream_nonce IS NULL AND upstream_verifier IS NULL))
);
INSERT INTO pending_authorizations_v5
SELECT id_hash, browser_hash,
       CASE WHEN client_id = 'authgate:account' THEN 'account' ELSE 'authorize' END,
       CASE WHEN client_id = 'authgate:account' THEN '' ELSE client_id END,
       redirect_uri, state, code_challenge, scope, resource, status,
       upstream_state_hash, upstream_nonce, upstream_verifier, created_at, expires_at
FROM pending_authorizations
WHERE status IN ('upstream', 'done')
   OR (status = 'consent' AND client_id <> 'authgate:account' AND upstream_nonce IS NULL AND upstream_verifier IS NULL);
DROP TABLE pending_authorizations;
ALTER TABLE pending_authorizations_v5 RENAME TO pending_authorizations;
CREATE UNIQUE INDEX pending_upstream_state ON pending_authorizations (upstream_state_hash);
CREATE INDEX pending_expiry ON pending_authorizations (expires_at);

CREATE TABLE grant_families_v5 (
    id            TEXT    PRIMARY KEY NOT NULL,
    client_id     TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    email         TEXT,
    scope         TEXT    NOT NULL,
    resource      TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL CHECK (expires_at >= created_at),
    last_used_at  BIGINT  NOT NULL,
    revoked_at    BIGINT
);
INSERT INTO grant_families_v5 SELECT * FROM grant_families WHERE expires_at >= created_at;

CREATE TABLE authorization_codes_v5 (
    hash            TEXT    PRIMARY KEY NOT NULL,
    family_id       TEXT    NOT NULL REFERENCES grant_families_v5 (id) ON DELETE CASCADE,
    client_id       TEXT    NOT NULL,
    redirect_uri    TEXT    NOT NULL,
    code_challenge  TEXT    NOT NULL CHECK (length(code_challenge) = 43),
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL,
    used_at         BIGINT
);
INSERT INTO authorization_codes_v5 SELECT * FROM authorization_codes
WHERE family_id IN (SELECT id FROM grant_families_v5) AND length(code_challenge) = 43;

CREATE TABLE refresh_tokens_v5 (
    hash              TEXT    PRIMARY KEY NOT NULL,
    family_id         TEXT    NOT NULL REFERENCES grant_families_v5 (id) ON DELETE CASCADE,
    created_at        BIGINT  NOT NULL,
    expires_at        BIGINT  NOT NULL,
    rotated_at        BIGINT,
    successor_sealed  TEXT,
    CHECK ((rotated_at IS NULL) = (successor_sealed IS NULL))
);
INSERT INTO refresh_tokens_v5 SELECT * FROM refresh_tokens
WHERE family_id IN (SELECT id FROM grant_families_v5) AND (rotated_at IS NULL) = (successor_sealed IS NULL);

DROP TABLE authorization_codes;
DROP TABLE refresh_tokens;
DROP TABLE grant_families;
ALTER TABLE grant_families_v5 RENAME TO grant_families;
ALTER TABLE authorization_codes_v5 RENAME TO authorization_codes;
ALTER TABLE refresh_tokens_v5 RENAME TO refresh_tokens;
CREATE INDEX families_subject ON grant_families (subject, client_id);
CREATE INDEX families_client ON grant_families (client_id);
CREATE INDEX codes_expiry ON authorization_codes (expires_at);
CREATE INDEX codes_family ON authorization_codes (family_id);
CREATE INDEX refresh_family ON refresh_tokens (family_id);
