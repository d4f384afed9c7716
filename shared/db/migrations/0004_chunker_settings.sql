-- The chunker's settings (target, overlap, max tokens) as recorded when a document was
-- chunked. Chunks of small documents that travel in groups are written only with their
-- vectors; a document resumed with some of them missing is re-chunked from its parsed
-- segments with exactly these settings, so the missing ordinals come back identical.
ALTER TABLE documents ADD COLUMN chunker_settings jsonb;
