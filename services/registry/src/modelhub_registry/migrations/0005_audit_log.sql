-- Who did what: every change (and every denied attempt) and every security-relevant read through the API.
CREATE TABLE audit_log (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    actor           text NOT NULL,
    actor_role      text NOT NULL,
    action          text NOT NULL,
    target          text NOT NULL DEFAULT '',
    outcome         text NOT NULL CHECK (outcome IN ('ok', 'denied', 'failed')),
    status          integer NOT NULL,
    source_address  text NOT NULL DEFAULT '',
    request_id      text NOT NULL DEFAULT ''
);

CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_actor ON audit_log (actor, at DESC, id DESC);
CREATE INDEX audit_log_target ON audit_log (target, at DESC, id DESC);
