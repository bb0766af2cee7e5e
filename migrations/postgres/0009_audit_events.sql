-- The audit trail: every tools/call the gateway inspects and every security event (logins,
-- consent, refresh-token reuse, revocations, policy refusals). Who, which client and resource,
-- which tool, the outcome and how long it took; never a tool's arguments, a token or a secret.
-- Rows older than AUTHGATE_AUDIT_RETENTION are deleted by the periodic clean-up.
CREATE TABLE audit_events (
    id          TEXT    PRIMARY KEY NOT NULL,
    at          BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    subject     TEXT,
    email       TEXT,
    client_id   TEXT,
    resource    TEXT,
    tool        TEXT,
    latency_ms  BIGINT  CHECK (latency_ms IS NULL OR latency_ms >= 0),
    request_id  TEXT,
    detail      TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_subject ON audit_events (subject, at);
CREATE INDEX audit_events_email ON audit_events (email, at);
CREATE INDEX audit_events_client ON audit_events (client_id, at);
