"""modelhub_registry."""
