-- What each supervisor knows about its workers, published so that
-- `ingestd status` and /v1/status on any host read one truth.
CREATE TABLE worker_status (
    supervisor      text NOT NULL,          -- host:pid of the supervisor
    slot            integer NOT NULL,
    pid             integer NOT NULL,
    owner           text NOT NULL,          -- the lease owner name this worker claims with
    started_at      timestamptz NOT NULL,
    heartbeat_at    timestamptz,
    uss_bytes       bigint,
    document_id     uuid,
    stage           text,
    documents_done  integer NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (supervisor, slot)
);

CREATE TABLE supervisor_status (
    supervisor   text PRIMARY KEY,
    pid          integer NOT NULL,
    hostname     text NOT NULL,
    started_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    state        text NOT NULL,              -- starting, running, draining, stopped
    details      jsonb NOT NULL DEFAULT '{}'::jsonb
);
