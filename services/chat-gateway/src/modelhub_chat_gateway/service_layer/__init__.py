"""Use cases of the gateway: resolving models, running turns, managing conversations."""
