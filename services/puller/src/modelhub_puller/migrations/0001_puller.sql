-- Pull jobs with per-layer progress, resumable blob uploads, and the model store's index.

CREATE TABLE pull_jobs (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    model             text NOT NULL,
    base_model_id     text NOT NULL,
    target            text NOT NULL CHECK (target IN ('store', 'ollama')),
    state             text NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    status            text NOT NULL DEFAULT 'queued',
    requested_by      text NOT NULL,
    total_bytes       bigint NOT NULL DEFAULT 0,
    completed_bytes   bigint NOT NULL DEFAULT 0,
    bytes_per_second  double precision NOT NULL DEFAULT 0,
    error_code        text,
    error_message     text,
    manifest_digest   text,
    cancel_requested  boolean NOT NULL DEFAULT false,
    attempts          integer NOT NULL DEFAULT 0,
    -- The replica working on the job and until when its claim holds without a heartbeat.
    worker            text,
    lease_until       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz
);

-- At most one active pull per model and target: a second request joins it.
CREATE UNIQUE INDEX pull_jobs_one_active ON pull_jobs (model, target) WHERE state IN ('queued', 'running');
CREATE INDEX pull_jobs_recent ON pull_jobs (created_at DESC);

CREATE TABLE pull_layers (
    pull_id          uuid NOT NULL REFERENCES pull_jobs (id) ON DELETE CASCADE,
    position         integer NOT NULL,
    digest           text NOT NULL,
    media_type       text NOT NULL,
    total_bytes      bigint NOT NULL,
    completed_bytes  bigint NOT NULL DEFAULT 0,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'downloading', 'present', 'downloaded', 'failed')),
    PRIMARY KEY (pull_id, digest)
);
CREATE INDEX pull_layers_digest ON pull_layers (digest);

-- Blobs verified and stored at blobs/sha256/<hex>: the authority on what is present.
CREATE TABLE blobs (
    digest      text PRIMARY KEY,
    size        bigint NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);

-- A download in progress: one per digest, shared by every pull that needs the blob, resumable by any
-- replica once its lease has expired.
CREATE TABLE blob_uploads (
    digest       text PRIMARY KEY,
    size         bigint NOT NULL,
    part_size    bigint NOT NULL,
    upload_id    text NOT NULL,
    pull_id      uuid,
    worker       text,
    lease_until  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE blob_upload_parts (
    digest       text NOT NULL REFERENCES blob_uploads (digest) ON DELETE CASCADE,
    part_number  integer NOT NULL,
    size         bigint NOT NULL,
    etag         text NOT NULL,
    PRIMARY KEY (digest, part_number)
);

-- Manifests in the store (manifests/<host>/<namespace>/<model>/<tag>) and the blobs each references.
CREATE TABLE manifests (
    model          text PRIMARY KEY,
    base_model_id  text NOT NULL,
    digest         text NOT NULL,
    object_key     text NOT NULL,
    size_bytes     bigint NOT NULL,
    source         text NOT NULL CHECK (source IN ('pull', 'import')),
    stored_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE manifest_blobs (
    model   text NOT NULL REFERENCES manifests (model) ON DELETE CASCADE,
    digest  text NOT NULL REFERENCES blobs (digest),
    PRIMARY KEY (model, digest)
);
CREATE INDEX manifest_blobs_digest ON manifest_blobs (digest);
