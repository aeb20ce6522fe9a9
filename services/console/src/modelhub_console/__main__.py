"""``python -m modelhub_console serve|check-config``."""

from __future__ import annotations

import sys

from modelhub_common.service_main import run_service
from modelhub_console import bootstrap
from modelhub_console.settings import ENV_PREFIX, ConsoleSettings


def main() -> int:
    return run_service(
        service=bootstrap.SERVICE,
        description=(ConsoleSettings.__doc__ or "").strip(),
        load_settings=lambda: ConsoleSettings(),  # values come from the environment
        env_prefix=ENV_PREFIX,
        serve=bootstrap.serve,
    )


if __name__ == "__main__":
    sys.exit(main())
