CREATE TABLE clients (
    id                 TEXT    PRIMARY KEY NOT NULL,
    secret_hash        TEXT,
    secret_expires_at  BIGINT  NOT NULL DEFAULT 0,
    metadata           TEXT    NOT NULL,
    created_at         BIGINT  NOT NULL,
    last_used_at       BIGINT
);
CREATE INDEX clients_idle ON clients (created_at) WHERE last_used_at IS NULL;
