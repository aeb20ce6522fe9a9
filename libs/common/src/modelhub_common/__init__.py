"""modelhub_common."""
