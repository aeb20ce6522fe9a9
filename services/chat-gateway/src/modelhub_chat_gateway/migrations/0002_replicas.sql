-- Which gateway replica streams each answer, and when each replica was last alive. Answers whose replica
-- died mid-stream are marked interrupted by the live replicas instead of staying 'streaming' for ever.
ALTER TABLE messages ADD COLUMN replica_id uuid;

CREATE INDEX messages_streaming ON messages (replica_id) WHERE status = 'streaming';

CREATE TABLE gateway_replicas (
    id          uuid PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now()
);
