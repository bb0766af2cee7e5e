-- A login that comes back from the upstream provider in a browser without the browser-binding
-- cookie (embedded webviews drop it across the redirect) waits, status 'confirm', for that browser
-- to confirm on a page only it was given: who logged in (`subject`, `email`) and the hash of the
-- page's token (`confirm_hash`). The table is rebuilt because SQLite cannot change a CHECK in
-- place; pending requests, with the OpenID columns of 0007, are carried over as they are.

CREATE TABLE pending_authorizations_v8 (
    id_hash              TEXT    PRIMARY KEY NOT NULL,
    browser_hash         TEXT    NOT NULL,
    purpose              TEXT    NOT NULL CHECK (purpose IN ('authorize', 'account')),
    client_id            TEXT    NOT NULL,
    redirect_uri         TEXT    NOT NULL,
    state                TEXT,
    code_challenge       TEXT    NOT NULL,
    scope                TEXT    NOT NULL,
    resource             TEXT    NOT NULL,
    status               TEXT    NOT NULL CHECK (status IN ('consent', 'upstream', 'confirm', 'done')),
    upstream_state_hash  TEXT,
    upstream_nonce       TEXT,
    upstream_verifier    TEXT,
    subject              TEXT,
    email                TEXT,
    confirm_hash         TEXT,
    created_at           BIGINT  NOT NULL,
    expires_at           BIGINT  NOT NULL,
    nonce                TEXT
        CHECK (nonce IS NULL OR (purpose = 'authorize' AND length(nonce) BETWEEN 1 AND 512)),
    login_not_before     BIGINT
        CHECK (login_not_before IS NULL OR purpose = 'authorize'),
    login_subject        TEXT
        CHECK (login_subject IS NULL OR (purpose = 'authorize' AND login_subject <> '')),
    CHECK (purpose <> 'authorize' OR (client_id <> '' AND length(code_challenge) = 43)),
    CHECK (purpose <> 'account' OR (client_id = '' AND status NOT IN ('consent', 'confirm'))),
    CHECK (status <> 'upstream' OR (upstream_state_hash IS NOT NULL AND upstream_nonce IS NOT NULL AND upstream_verifier IS NOT NULL)),
    CHECK (status = 'upstream' OR (upstream_nonce IS NULL AND upstream_verifier IS NULL)),
    CHECK (status <> 'confirm' OR (subject IS NOT NULL AND confirm_hash IS NOT NULL)),
    CHECK (status = 'confirm' OR (subject IS NULL AND email IS NULL))
);
INSERT INTO pending_authorizations_v8
    (id_hash, browser_hash, purpose, client_id, redirect_uri, state, code_challenge, scope, resource,
     status, upstream_state_hash, upstream_nonce, upstream_verifier, created_at, expires_at,
     nonce, login_not_before, login_subject)
SELECT id_hash, browser_hash, purpose, client_id, redirect_uri, state, code_challenge, scope, resource,
       status, upstream_state_hash, upstream_nonce, upstream_verifier, created_at, expires_at,
       nonce, login_not_before, login_subject
FROM pending_authorizations;
DROP TABLE pending_authorizations;
ALTER TABLE pending_authorizations_v8 RENAME TO pending_authorizations;
CREATE UNIQUE INDEX pending_upstream_state ON pending_authorizations (upstream_state_hash);
CREATE UNIQUE INDEX pending_confirmation ON pending_authorizations (confirm_hash);
CREATE INDEX pending_expiry ON pending_authorizations (expires_at);
