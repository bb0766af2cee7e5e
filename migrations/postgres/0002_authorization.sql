-- Authorization requests waiting for consent or for the upstream login.
CREATE TABLE pending_authorizations (
    id_hash              TEXT    PRIMARY KEY NOT NULL,
    browser_hash         TEXT    NOT NULL,
    client_id            TEXT    NOT NULL,
    redirect_uri         TEXT    NOT NULL,
    state                TEXT,
    code_challenge       TEXT    NOT NULL,
    scope                TEXT    NOT NULL,
    resource             TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    upstream_state_hash  TEXT,
    upstream_nonce       TEXT,
    upstream_verifier    TEXT,
    created_at           BIGINT  NOT NULL,
    expires_at           BIGINT  NOT NULL
);
CREATE UNIQUE INDEX pending_upstream_state ON pending_authorizations (upstream_state_hash);
CREATE INDEX pending_expiry ON pending_authorizations (expires_at);

-- authgate's own browser sessions, after an upstream login.
CREATE TABLE sessions (
    id_hash     TEXT    PRIMARY KEY NOT NULL,
    subject     TEXT    NOT NULL,
    email       TEXT,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- What a user approved, per client.
CREATE TABLE consents (
    subject       TEXT    NOT NULL,
    client_id     TEXT    NOT NULL,
    scope         TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    last_used_at  BIGINT  NOT NULL,
    PRIMARY KEY (subject, client_id)
);

-- A grant: everything one authorization produced (codes, refresh tokens, access tokens).
CREATE TABLE grant_families (
    id            TEXT    PRIMARY KEY NOT NULL,
    client_id     TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    email         TEXT,
    scope         TEXT    NOT NULL,
    resource      TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    last_used_at  BIGINT  NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX families_subject ON grant_families (subject, client_id);
CREATE INDEX families_client ON grant_families (client_id);

CREATE TABLE authorization_codes (
    hash            TEXT    PRIMARY KEY NOT NULL,
    family_id       TEXT    NOT NULL,
    client_id       TEXT    NOT NULL,
    redirect_uri    TEXT    NOT NULL,
    code_challenge  TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL,
    used_at         BIGINT
);
CREATE INDEX codes_expiry ON authorization_codes (expires_at);

CREATE TABLE refresh_tokens (
    hash              TEXT    PRIMARY KEY NOT NULL,
    family_id         TEXT    NOT NULL,
    created_at        BIGINT  NOT NULL,
    expires_at        BIGINT  NOT NULL,
    rotated_at        BIGINT,
    successor_sealed  TEXT
);
CREATE INDEX refresh_family ON refresh_tokens (family_id);

-- Access tokens revoked one by one (RFC 7009), until they expire anyway.
CREATE TABLE revoked_access_tokens (
    jti         TEXT    PRIMARY KEY NOT NULL,
    expires_at  BIGINT  NOT NULL
);

CREATE TABLE signing_keys (
    kid          TEXT    PRIMARY KEY NOT NULL,
    alg          TEXT    NOT NULL,
    private_der  TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    retired_at   BIGINT
);
