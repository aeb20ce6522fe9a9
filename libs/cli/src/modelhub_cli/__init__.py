"""modelhub_cli."""
