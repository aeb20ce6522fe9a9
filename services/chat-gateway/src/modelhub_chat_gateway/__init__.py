"""modelhub_chat_gateway."""
