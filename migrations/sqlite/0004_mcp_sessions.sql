-- MCP sessions (`Mcp-Session-Id`) that an upstream MCP server issued through authgate, bound to
-- the caller they were issued to, so that no other caller can use them. A session id is a bearer
-- secret: only its SHA-256 is stored. `expires_at` is the idle end, pushed out as it is used.
CREATE TABLE mcp_sessions (
    id_hash       TEXT    NOT NULL,
    resource      TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    client_id     TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    last_used_at  BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    PRIMARY KEY (id_hash, resource)
);
CREATE INDEX mcp_sessions_expiry ON mcp_sessions (expires_at);
