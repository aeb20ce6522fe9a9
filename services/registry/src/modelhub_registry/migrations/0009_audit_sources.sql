-- The audit log keeps every service's records: which service wrote a row, and the id of its AuditRecorded
-- event (a redelivered event is stored once).
ALTER TABLE audit_log ADD COLUMN source text NOT NULL DEFAULT 'registry', ADD COLUMN event_id text;
CREATE UNIQUE INDEX audit_log_event_id ON audit_log (event_id);
