-- Chunk rows keep their vector in the row whenever the row fits a page, instead of in
-- the TOAST table from 2 KB on (PostgreSQL's default target). A 1536-dimension vector
-- is 6 KB: out of line it cost four TOAST rows, four TOAST index entries and a pglz
-- attempt on the chunk text for every chunk written. Inline, PostgreSQL spends 20-30 %
-- less CPU per row written (a COPY of 42,000 rows with 400 B or 2 KB of text; ~12 % less
-- per chunk in the pipeline benchmark, README "Performance and profiling") and the
-- table takes 7-13 % less disk; an HNSW build takes as long. Vectors too large for a page
-- (3072 dimensions) still go to TOAST as before. Scans that skip the vector read more
-- pages; ingestd's own reads of chunks all go through indexes.
ALTER TABLE chunks SET (toast_tuple_target = 8160);
