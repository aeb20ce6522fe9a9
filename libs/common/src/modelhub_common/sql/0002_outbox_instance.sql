-- A random id per outbox database. Relays put it in every Nats-Msg-Id, so two databases (two services, or
-- a database restored or re-created) never produce the same id and JetStream never drops one's event as a
-- duplicate of the other's.
CREATE TABLE outbox_instance (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    singleton   boolean NOT NULL DEFAULT true UNIQUE CHECK (singleton)
);
INSERT INTO outbox_instance DEFAULT VALUES;
