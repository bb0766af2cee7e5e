-- The user's tokens at the upstream provider, kept for the MCP servers that call its APIs as the
-- user: one set per grant, gone with the grant. Both are sealed (AES-256-GCM under a key derived
-- from AUTHGATE_KEY_ENCRYPTION_KEY); the CHECKs refuse anything stored in the clear.
-- `version` moves with every refresh and `lease_until` says another instance is refreshing, so
-- only one instance at a time asks the provider.
CREATE TABLE upstream_tokens (
    grant_id        TEXT    PRIMARY KEY NOT NULL REFERENCES grant_families (id) ON DELETE CASCADE,
    access_sealed   TEXT    NOT NULL CHECK (access_sealed LIKE 'sealed1:%'),
    refresh_sealed  TEXT    CHECK (refresh_sealed IS NULL OR refresh_sealed LIKE 'sealed1:%'),
    obtained_at     BIGINT  NOT NULL,
    expires_at      BIGINT,
    version         BIGINT  NOT NULL,
    lease_until     BIGINT
);
