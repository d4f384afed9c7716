-- What `complete` promises is held by the database, not only by the workers.
--
-- The transition trigger fires on UPDATE: a row inserted as `complete` (or in any other
-- status) skipped every check. A document is born `queued`, where the state table starts.
CREATE FUNCTION ingestd_check_birth() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'queued' THEN
        RAISE EXCEPTION 'a document is created queued, not % (document %)', NEW.status, NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER documents_birth
    BEFORE INSERT ON documents
    FOR EACH ROW EXECUTE FUNCTION ingestd_check_birth();

-- `complete` means every chunk of the document's chunking has its vector. One probe of
-- the partial index of unembedded chunks per completion; finalize checks the same before
-- it asks, so in a healthy run this never refuses anything.
CREATE FUNCTION ingestd_check_complete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM chunks
        WHERE document_id = NEW.id AND embedding IS NULL
          AND chunker = NEW.chunker AND chunker_version = NEW.chunker_version
    ) THEN
        RAISE EXCEPTION 'document % cannot be complete: a chunk has no vector', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER documents_complete
    BEFORE UPDATE OF status ON documents
    FOR EACH ROW WHEN (NEW.status = 'complete' AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION ingestd_check_complete();
