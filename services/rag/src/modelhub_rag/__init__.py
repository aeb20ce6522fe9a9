"""modelhub_rag."""
