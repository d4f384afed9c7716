-- How long a document has waited on an unavailable service (its circuit open) without
-- spending an attempt, bounded by ``service_wait_horizon_seconds``: the clock starts at the
-- first such rescheduling and is cleared by a stage finishing or an attempt counted.
ALTER TABLE documents
    ADD COLUMN waiting_since timestamptz,
    ADD COLUMN waiting_for text;

-- The rule of migration 0007, extended by the wait horizon: ``waited`` is how long the
-- document has waited on its service, counting the attempt that just ended (0 when it
-- was not waiting), ``horizon`` the most it may. ``ingestd.shared.db.attempts.ending``
-- states the same rule; a property test pins the two to the same answers.
DROP FUNCTION ingestd_attempt_end(boolean, integer, integer);
CREATE FUNCTION ingestd_attempt_end(
    retryable boolean, attempts integer, max_attempts integer,
    waited double precision, horizon double precision
)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN NOT retryable THEN 'failed'
        WHEN attempts >= max_attempts THEN 'dead'
        WHEN waited >= horizon THEN 'dead'
        ELSE 'retry'
    END
$$;
