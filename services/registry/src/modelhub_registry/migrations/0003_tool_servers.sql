-- Tool servers (MCP or OpenAPI) that admins register and model files name in meta.toolIds.
CREATE TABLE tool_servers (
    id                  text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    name                text NOT NULL,
    description         text NOT NULL DEFAULT '',
    kind                text NOT NULL CHECK (kind IN ('mcp', 'openapi')),
    url                 text NOT NULL,
    base_url            text,
    auth                text NOT NULL DEFAULT 'none' CHECK (auth IN ('none', 'bearer', 'forward')),
    -- Only the credentials route (admin tokens) ever answers it.
    secret              text,
    timeout_seconds     double precision NOT NULL,
    max_result_bytes    integer NOT NULL,
    -- Open WebUI's access_control: NULL = every user may use it, else {"read": {"user_ids", "group_ids"}}.
    access_control      jsonb,
    tools               jsonb NOT NULL DEFAULT '[]',
    refreshed_at        timestamptz,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    version             integer NOT NULL DEFAULT 1
);
