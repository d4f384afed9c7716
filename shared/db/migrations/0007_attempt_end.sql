-- How a failed attempt ends: the one rule, for the statements that must stay set-based
-- (the lease reaper). ``ingestd.shared.db.attempts.ending`` states the same rule for the
-- row-at-a-time paths, and a property test pins the two to the same answers.
--
-- ``attempts`` counts the attempt that just ended (when its error class counts one).
-- Returns 'failed' (a permanent error class), 'dead' (attempts exhausted) or 'retry'.
CREATE FUNCTION ingestd_attempt_end(retryable boolean, attempts integer, max_attempts integer)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN NOT retryable THEN 'failed'
        WHEN attempts >= max_attempts THEN 'dead'
        ELSE 'retry'
    END
$$;
