"""``python -m modelhub_chat_gateway serve|migrate|check-config``."""

from __future__ import annotations

import sys

from modelhub_chat_gateway import bootstrap
from modelhub_chat_gateway.settings import ENV_PREFIX, ChatGatewaySettings
from modelhub_common.service_main import run_service


def main() -> int:
    return run_service(
        service=bootstrap.SERVICE,
        description=(ChatGatewaySettings.__doc__ or "").strip(),
        load_settings=lambda: ChatGatewaySettings(),  # values come from the environment
        env_prefix=ENV_PREFIX,
        serve=bootstrap.serve,
        migrate=bootstrap.run_migrations,
    )


if __name__ == "__main__":
    sys.exit(main())
