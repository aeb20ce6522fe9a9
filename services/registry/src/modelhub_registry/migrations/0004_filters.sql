-- Filters admins configure and model files name in meta.filterIds / meta.defaultFilterIds; the chat gateway
-- runs them on the user's message (inlet) and on the answer (outlet).
CREATE TABLE filters (
    id            text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    name          text NOT NULL,
    description   text NOT NULL DEFAULT '',
    kind          text NOT NULL CHECK (kind IN ('redact', 'block', 'prepend', 'append', 'max_length', 'webhook')),
    direction     text NOT NULL CHECK (direction IN ('inlet', 'outlet', 'both')),
    -- Validated per kind by the registry; a webhook's secret is in here, and only the config routes (admin
    -- tokens) ever answer it.
    config        jsonb NOT NULL,
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    version       integer NOT NULL DEFAULT 1
);
