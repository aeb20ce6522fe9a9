-- Conversations as trees of messages. A user message's children are the answers of its turn (one per model,
-- plus regenerated siblings); current_message_id is the leaf of the selected branch.
CREATE TABLE conversations (
    id                  uuid PRIMARY KEY,
    owner_id            text NOT NULL,
    title               text NOT NULL DEFAULT '',
    current_message_id  uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX conversations_owner_recent ON conversations (owner_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id                  uuid PRIMARY KEY,
    conversation_id     uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    parent_id           uuid REFERENCES messages (id) ON DELETE CASCADE,
    seq                 bigint GENERATED ALWAYS AS IDENTITY,
    role                text NOT NULL CHECK (role IN ('user', 'assistant')),
    model_id            text NOT NULL DEFAULT '',
    content             text NOT NULL DEFAULT '',
    -- [{"key": "<object key in the gateway's bucket>", "mime_type": "image/png"}]
    images              jsonb NOT NULL DEFAULT '[]',
    status              text NOT NULL CHECK (status IN ('streaming', 'done', 'error', 'cancelled')),
    context_mode        text NOT NULL DEFAULT 'shared' CHECK (context_mode IN ('shared', 'per_model')),
    finish_reason       text NOT NULL DEFAULT '',
    error_code          text NOT NULL DEFAULT '',
    error_message       text NOT NULL DEFAULT '',
    prompt_tokens       integer NOT NULL DEFAULT 0,
    completion_tokens   integer NOT NULL DEFAULT 0,
    time_to_first_token double precision NOT NULL DEFAULT 0,
    total_seconds       double precision NOT NULL DEFAULT 0,
    citations           jsonb NOT NULL DEFAULT '[]',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX messages_by_conversation ON messages (conversation_id, seq);
CREATE INDEX messages_by_parent ON messages (parent_id);
