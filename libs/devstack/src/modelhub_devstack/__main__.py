"""``python -m modelhub_devstack`` runs the ``modelhub-dev`` CLI."""

from modelhub_devstack.cli import main

main()
