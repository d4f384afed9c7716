-- ingestd core schema: documents, their bytes, parsed text, chunks, events.
-- The legal status transitions are not written here: the migration runner
-- copies them from shared/states.py into document_transitions on every run.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TYPE document_status AS ENUM (
    'queued', 'parsing', 'awaiting_parse', 'parsed', 'chunking', 'chunked',
    'embedding', 'embedded', 'finalizing', 'complete', 'failed', 'dead'
);

CREATE TABLE ingestd_meta (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);

CREATE TABLE documents (
    id               uuid PRIMARY KEY,          -- uuid5 of the content hash: same bytes, same id
    content_sha256   text NOT NULL UNIQUE,
    source           text NOT NULL,             -- path or URL it was ingested from
    filename         text NOT NULL,
    mime_type        text NOT NULL,
    size_bytes       bigint NOT NULL CHECK (size_bytes >= 0),
    blob_oid         oid,                       -- large object holding the original bytes
    correlation_id   uuid NOT NULL,
    status           document_status NOT NULL DEFAULT 'queued',
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    run_after        timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    error_class      text,
    error_message    text,
    parser           text,
    parse_job_id     text UNIQUE,               -- asynchronous parser's job id (LlamaParse)
    chunker          text,
    chunker_version  integer,
    embedding_model  text,
    parsed_segments  integer NOT NULL DEFAULT 0,
    parsed_chars     bigint NOT NULL DEFAULT 0,
    pages            integer,
    chunks_total     integer,
    chunks_embedded  integer NOT NULL DEFAULT 0,
    tokens_total     bigint NOT NULL DEFAULT 0,
    embed_tokens     bigint NOT NULL DEFAULT 0,  -- tokens billed by the embedding API
    cost_usd         numeric(14, 8) NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),  -- last status change
    started_at       timestamptz,
    completed_at     timestamptz,
    CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
);

-- What a claim scans: resting documents by due time. Partial, so finished
-- documents cost the claim nothing however many there are.
CREATE INDEX documents_runnable_idx ON documents (run_after)
    WHERE status IN ('queued', 'awaiting_parse', 'parsed', 'chunked', 'embedded');
CREATE INDEX documents_leased_idx ON documents (lease_expires_at)
    WHERE lease_owner IS NOT NULL;
CREATE INDEX documents_status_idx ON documents (status);

CREATE TABLE document_transitions (
    from_status document_status NOT NULL,
    to_status   document_status NOT NULL,
    PRIMARY KEY (from_status, to_status)
);

-- The body of ingestd_check_transition() is generated from shared/states.py by
-- the migration runner on every run (see migrate.py); this is a placeholder
-- that refuses everything until then.
CREATE FUNCTION ingestd_check_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'state table not installed';
END $$;

-- Fires only when the status changes: lease renewals and progress counters
-- cost no trigger call.
CREATE TRIGGER documents_transition
    BEFORE UPDATE OF status ON documents
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION ingestd_check_transition();

-- Wake sleeping workers (LISTEN ingestd_work) when something becomes runnable.
-- pg_notify folds identical payloads within a transaction, so a batch insert
-- sends one notification.
CREATE FUNCTION ingestd_notify_work() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ingestd_work', '');
    RETURN NULL;
END $$;

CREATE TRIGGER documents_notify_insert
    AFTER INSERT ON documents
    FOR EACH ROW WHEN (NEW.status IN ('queued', 'awaiting_parse', 'parsed', 'chunked', 'embedded'))
    EXECUTE FUNCTION ingestd_notify_work();

CREATE TRIGGER documents_notify_update
    AFTER UPDATE OF status ON documents
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status
        AND NEW.status IN ('queued', 'awaiting_parse', 'parsed', 'chunked', 'embedded'))
    EXECUTE FUNCTION ingestd_notify_work();

-- Deleting a document removes its bytes.
CREATE FUNCTION ingestd_unlink_blob() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.blob_oid IS NOT NULL THEN
        PERFORM lo_unlink(OLD.blob_oid);
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER documents_unlink_blob
    AFTER DELETE ON documents
    FOR EACH ROW EXECUTE FUNCTION ingestd_unlink_blob();

-- Parsed text in bounded segments, so any worker on any host continues from
-- 'parsed' and nobody holds a whole document in memory.
CREATE TABLE parsed_segments (
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    text        text NOT NULL,
    PRIMARY KEY (document_id, seq)
);

-- Public interface: users query this table directly.
-- The embedding column's dimension is fixed by the first configured model
-- (see shared/db/space.py); NULL means "not embedded yet", never a zero vector.
CREATE TABLE chunks (
    document_id     uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    chunker         text NOT NULL,
    chunker_version integer NOT NULL,
    ordinal         integer NOT NULL CHECK (ordinal >= 0),
    text            text NOT NULL CHECK (length(text) > 0),
    token_count     integer NOT NULL CHECK (token_count > 0),
    heading         text,
    embedding       vector,
    embedding_model text,
    embedded_at     timestamptz,
    PRIMARY KEY (document_id, chunker, chunker_version, ordinal),
    CHECK ((embedding IS NULL) = (embedding_model IS NULL)),
    -- A zero vector is a placeholder, never an embedding (pgvector already refuses NaN).
    CHECK (embedding IS NULL OR vector_norm(embedding) > 0)
);

CREATE INDEX chunks_unembedded_idx ON chunks (document_id, ordinal) WHERE embedding IS NULL;

CREATE TABLE document_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id    uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    event          text NOT NULL,   -- ingested, claimed, stage_finished, retry_scheduled, error, lease_expired, ...
    stage          text,
    from_status    document_status,
    to_status      document_status,
    attempt        integer,
    worker         text,
    correlation_id uuid,
    error_class    text,
    message        text,
    details        jsonb
);

CREATE INDEX document_events_document_idx ON document_events (document_id, id);

-- LlamaParse webhook deliveries already applied (replay protection).
CREATE TABLE webhook_deliveries (
    signature   text PRIMARY KEY,
    job_id      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
