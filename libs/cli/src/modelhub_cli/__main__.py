"""Lets ``python -m modelhub_cli`` work like ``modelhub``."""

from modelhub_cli.main import app

app()
