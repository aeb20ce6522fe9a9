"""The gateway's domain: conversations as message trees, resolved models, prompts and parameters."""
