-- Remote (LlamaParse) parsing: results by content hash, replay-record pruning, job age.

-- One row per content hash that LlamaParse parsed successfully. Ids derive from the
-- hash, so this matters when a document was deleted and the same bytes come back:
-- the finished job's result is fetched again instead of uploading (and paying) twice.
-- The text itself is not duplicated here; it lives in parsed_segments.
CREATE TABLE parse_results (
    content_sha256 text PRIMARY KEY,
    parser         text NOT NULL,               -- e.g. 'llamaparse'
    job_id         text NOT NULL,               -- the finished job whose result this is
    segments       integer NOT NULL CHECK (segments >= 0),
    chars          bigint NOT NULL CHECK (chars >= 0),
    pages          integer,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Deliveries older than the freshness window are refused as stale anyway, so their
-- replay records can be pruned by age.
CREATE INDEX webhook_deliveries_received_idx ON webhook_deliveries (received_at);

-- When the current parse job was submitted: bounds how long a job that never finishes
-- is polled before it is given up and submitted again.
ALTER TABLE documents ADD COLUMN parse_submitted_at timestamptz;
