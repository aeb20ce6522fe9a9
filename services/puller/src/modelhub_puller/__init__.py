"""modelhub_puller."""
