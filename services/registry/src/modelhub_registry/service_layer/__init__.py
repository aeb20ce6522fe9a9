"""Use cases of the registry: each runs in one transaction and writes its events to the outbox."""
