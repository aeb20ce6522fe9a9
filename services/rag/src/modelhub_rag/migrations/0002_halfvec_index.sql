-- Vector search walks a half-precision HNSW index instead of a full-precision one: each vector takes half the
-- bytes, so a search visits half the pages (fewer buffer reads, more of the index in shared_buffers) and
-- computes cheaper distances, with the same top results (recall@10 is measured by bench/rag.py). halfvec
-- indexes also take vectors of up to 4,000 dimensions (vector: 2,000), so larger embedders can be indexed.
-- The stored embeddings stay full precision; only the index and the distance used for ranking change.
-- `migrate` creates the index of the configured embedder's size when it is not 384 (see bootstrap).
DO $$
DECLARE
    old record;
BEGIN
    FOR old IN SELECT indexname FROM pg_indexes
               WHERE schemaname = current_schema() AND tablename = 'chunks' AND indexname LIKE 'chunks\_embedding\_%\_idx'
    LOOP
        EXECUTE format('DROP INDEX %I', old.indexname);
    END LOOP;
END $$;

CREATE INDEX chunks_halfvec_384_idx ON chunks
    USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops) WITH (m = 16, ef_construction = 128)
    WHERE dimensions = 384;
