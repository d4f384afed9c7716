-- Parsed text is stored as it is, not compressed. pglz costs PostgreSQL ~25 µs of CPU per
-- KB written (~205 µs for an 8 KB document, the largest single cost of the parse stage
-- in profiling/README.md), while the text is a small part of what a document stores:
-- 8 KB of text next to ~130 KB of 1536-dimension vectors, so uncompressed it adds ~3%
-- to the disk a document takes. Where disk matters more (or the server has lz4), an
-- operator may set it back: ALTER TABLE parsed_segments ALTER COLUMN text SET STORAGE EXTENDED.
ALTER TABLE parsed_segments ALTER COLUMN text SET STORAGE EXTERNAL;
