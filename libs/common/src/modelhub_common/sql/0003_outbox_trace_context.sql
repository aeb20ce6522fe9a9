-- The W3C trace context (traceparent, tracestate) of the transaction that added the row, when it was traced.
-- The relay publishes the row under it, so a trace runs from the request through the relay to the consumers,
-- even when the row is published after a restart. NULL when tracing was off.
ALTER TABLE outbox ADD COLUMN trace_context jsonb;
