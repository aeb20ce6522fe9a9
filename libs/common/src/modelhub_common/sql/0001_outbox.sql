-- The transactional outbox (modelhub_common.outbox): services insert event rows in the same transaction as
-- the data they describe; one relay per database publishes them to JetStream in id order.
CREATE TABLE outbox (
    id           bigserial   PRIMARY KEY,
    subject      text        NOT NULL CHECK (subject <> ''),
    -- A serialized modelhub.events.v1.EventEnvelope.
    payload      bytea       NOT NULL,
    -- Extra NATS headers to publish with the event (the relay sets Nats-Msg-Id itself).
    headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

-- The relay reads only unpublished rows, in id order; this index stays as small as the backlog.
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- Retention cleanup deletes published rows by age.
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
