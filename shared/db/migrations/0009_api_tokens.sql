-- API tokens for the HTTP API. The secret is never stored: only its SHA-256, looked up
-- by the token's non-secret id (the part of the token between its prefix and its secret).
-- In the database, not on one host, so every host of a scaled-out deployment accepts it.
CREATE TABLE api_tokens (
    id             text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{12}$'),
    name           text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    scope          text NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    secret_sha256  bytea NOT NULL CHECK (length(secret_sha256) = 32),
    -- NULL: the server's max_upload_mb applies.
    max_upload_mb  integer CHECK (max_upload_mb >= 1),
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz,
    revoked_at     timestamptz,
    last_used_at   timestamptz
);

-- A name names one live token; a revoked token keeps its name in the record, and the name
-- can be given to a new one.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
