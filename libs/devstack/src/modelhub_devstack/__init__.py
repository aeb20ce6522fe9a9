"""modelhub_devstack."""
