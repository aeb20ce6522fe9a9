-- Model files, base models, connections, users and groups.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE users (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    email       text,
    role        text NOT NULL CHECK (role IN ('admin', 'user')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE groups (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE group_members (
    group_id    text NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE connections (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    type            text NOT NULL CHECK (type IN ('ollama', 'openai')),
    name            text NOT NULL,
    url             text NOT NULL,
    api_key         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_synced_at  timestamptz,
    last_error      text
);

CREATE TABLE base_models (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    source          text NOT NULL CHECK (source IN ('ollama', 'openai', 'local', 'manual')),
    connection_id   uuid REFERENCES connections (id) ON DELETE SET NULL,
    capabilities    jsonb NOT NULL DEFAULT '{}',
    details         jsonb NOT NULL DEFAULT '{}',
    params          jsonb NOT NULL DEFAULT '{}',
    available       boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE models (
    id              text PRIMARY KEY,
    base_model_id   text,
    name            text NOT NULL,
    params          jsonb NOT NULL DEFAULT '{}',
    meta            jsonb NOT NULL DEFAULT '{}',
    tags            text[] NOT NULL DEFAULT '{}',
    description     text NOT NULL DEFAULT '',
    hidden          boolean NOT NULL DEFAULT false,
    enabled         boolean NOT NULL DEFAULT true,
    owner_id        text NOT NULL,
    public_read     boolean NOT NULL DEFAULT false,
    avatar_key      text,
    avatar_type     text,
    avatar_etag     text,
    avatar_url      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    version         integer NOT NULL DEFAULT 1
);
CREATE INDEX models_owner_idx ON models (owner_id, id);
CREATE INDEX models_base_idx ON models (base_model_id);
CREATE INDEX models_tags_idx ON models USING gin (tags);
CREATE INDEX models_search_idx ON models USING gin ((lower(id || ' ' || name || ' ' || description)) gin_trgm_ops);

CREATE TABLE model_grants (
    model_id        text NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    principal_type  text NOT NULL CHECK (principal_type IN ('user', 'group')),
    principal_id    text NOT NULL,
    permission      text NOT NULL CHECK (permission IN ('read', 'write')),
    PRIMARY KEY (model_id, principal_type, principal_id, permission)
);
CREATE INDEX model_grants_principal_idx ON model_grants (principal_type, principal_id, model_id);

CREATE TABLE model_revisions (
    model_id        text NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    version         integer NOT NULL,
    action          text NOT NULL,
    actor           text NOT NULL,
    changed_fields  text[] NOT NULL DEFAULT '{}',
    snapshot        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, version)
);
