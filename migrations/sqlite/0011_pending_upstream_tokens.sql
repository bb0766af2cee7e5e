-- A login that comes back without the browser cookie waits for its confirmation (0008); when its
-- resource hands the user's upstream tokens to the MCP server, the provider's tokens from that
-- login wait with it, sealed (AES-256-GCM, bound to the request), until the confirmation moves
-- them to the grant or the request ends without one. Only a waiting request holds them.
ALTER TABLE pending_authorizations ADD COLUMN upstream_tokens TEXT
    CHECK (upstream_tokens IS NULL OR (status = 'confirm' AND upstream_tokens LIKE 'sealed1:%'));
