-- Knowledge collections, their files, and the chunks + vectors retrieval searches.
CREATE EXTENSION IF NOT EXISTS vector;

-- Full-text search for hybrid retrieval: no stemming (ids, error codes and names stay as written), but the
-- commonest words of a few languages are dropped so that a question's filler words do not match every chunk.
-- Each stop dictionary passes words it does not know on to the next; plain `simple` keeps the rest.
CREATE TEXT SEARCH DICTIONARY rag_stop_english (TEMPLATE = pg_catalog.simple, STOPWORDS = english, ACCEPT = false);
CREATE TEXT SEARCH DICTIONARY rag_stop_spanish (TEMPLATE = pg_catalog.simple, STOPWORDS = spanish, ACCEPT = false);
CREATE TEXT SEARCH DICTIONARY rag_stop_german (TEMPLATE = pg_catalog.simple, STOPWORDS = german, ACCEPT = false);
CREATE TEXT SEARCH DICTIONARY rag_stop_french (TEMPLATE = pg_catalog.simple, STOPWORDS = french, ACCEPT = false);
CREATE TEXT SEARCH DICTIONARY rag_stop_portuguese (TEMPLATE = pg_catalog.simple, STOPWORDS = portuguese, ACCEPT = false);
CREATE TEXT SEARCH CONFIGURATION rag_text (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION rag_text
    ALTER MAPPING FOR asciiword, word, hword, hword_part, asciihword, hword_asciipart
    WITH rag_stop_english, rag_stop_spanish, rag_stop_german, rag_stop_french, rag_stop_portuguese, simple;

CREATE TABLE collections (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    description     text NOT NULL DEFAULT '',
    owner_id        text NOT NULL,
    public_read     boolean NOT NULL DEFAULT false,
    -- The embedder (model and vector space) and vector size this collection's chunks are embedded with.
    embedder        text NOT NULL,
    dimensions      integer NOT NULL CHECK (dimensions > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    version         integer NOT NULL DEFAULT 1
);
CREATE INDEX collections_owner_idx ON collections (owner_id);

CREATE TABLE collection_grants (
    collection_id   text NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    principal_type  text NOT NULL CHECK (principal_type IN ('user', 'group')),
    principal_id    text NOT NULL,
    permission      text NOT NULL CHECK (permission IN ('read', 'write')),
    PRIMARY KEY (collection_id, principal_type, principal_id, permission)
);
CREATE INDEX collection_grants_principal_idx ON collection_grants (principal_type, principal_id);

CREATE TABLE files (
    id              text PRIMARY KEY,
    collection_id   text NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    name            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('pdf', 'docx', 'html', 'md', 'txt', 'csv', 'json')),
    content_type    text NOT NULL,
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    sha256          text NOT NULL,
    object_key      text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'indexing', 'indexed', 'failed')),
    error_code      text,
    error_message   text,
    chunk_count     integer NOT NULL DEFAULT 0,
    -- What the file's current chunks were made with (NULL until indexed).
    embedder        text,
    chunker         text,
    -- Bumped by a re-index: a worker keeps its result only if the generation it started from is still current.
    generation      integer NOT NULL DEFAULT 1,
    attempts        integer NOT NULL DEFAULT 0,
    uploaded_by     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    indexed_at      timestamptz,
    -- The same content twice in one collection would only duplicate every search hit.
    UNIQUE (collection_id, sha256)
);
CREATE INDEX files_collection_idx ON files (collection_id, created_at, id);
-- Finds an already indexed copy of the same content, whose chunks and vectors are reused instead of re-embedded.
CREATE INDEX files_reuse_idx ON files (sha256, embedder, chunker) WHERE status = 'indexed';

CREATE TABLE chunks (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection_id   text NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    file_id         text NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    ordinal         integer NOT NULL,
    text            text NOT NULL,
    page            integer,
    start_offset    integer NOT NULL,
    end_offset      integer NOT NULL,
    token_count     integer NOT NULL,
    embedder        text NOT NULL,
    dimensions      integer NOT NULL,
    -- Untyped so that collections may use embedders of different sizes; each size gets its own partial HNSW
    -- index over `embedding::vector(N)` (created by `migrate` for the configured embedder).
    embedding       vector NOT NULL,
    tsv             tsvector GENERATED ALWAYS AS (to_tsvector('rag_text'::regconfig, text)) STORED,
    -- A file is written in one transaction; this makes a duplicate chunk impossible even so.
    UNIQUE (file_id, ordinal),
    CHECK (vector_dims(embedding) = dimensions)
);
CREATE INDEX chunks_collection_idx ON chunks (collection_id, embedder);
CREATE INDEX chunks_tsv_idx ON chunks USING gin (tsv);
CREATE INDEX chunks_embedding_384_idx ON chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops) WITH (m = 16, ef_construction = 128)
    WHERE dimensions = 384;

-- Objects of deleted files, removed from S3 after the delete commits (and retried until they are gone).
CREATE TABLE object_deletions (
    object_key      text PRIMARY KEY,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text
);

-- Which model files use which collections, from the registry's model events.
CREATE TABLE model_references (
    model_id        text NOT NULL,
    knowledge_id    text NOT NULL,
    PRIMARY KEY (model_id, knowledge_id)
);
CREATE INDEX model_references_knowledge_idx ON model_references (knowledge_id);

-- The newest model version seen, so that an older event arriving late does not undo a newer one.
CREATE TABLE model_versions (
    model_id        text PRIMARY KEY,
    version         bigint NOT NULL,
    deleted         boolean NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
