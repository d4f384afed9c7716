-- The HTTP API: Idempotency-Key replay records, and the index behind keyset paging.

-- One row per Idempotency-Key an upload carried (draft-ietf-httpapi-idempotency-key-header).
-- A row without a status is a request still in progress (or one whose process died:
-- claimable again once stale). Kept until expires_at; a row goes with its document,
-- so a deleted document leaves no key that names it.
CREATE TABLE idempotency_keys (
    key             text PRIMARY KEY,
    request_sha256  text,                        -- the uploaded file's hash, once known
    status_code     smallint,                    -- the answer given, once given
    response        jsonb,
    document_id     uuid REFERENCES documents (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);

CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- GET /v1/documents walks documents in (created_at, id) order, a page at a time.
CREATE INDEX documents_created_idx ON documents (created_at, id);
