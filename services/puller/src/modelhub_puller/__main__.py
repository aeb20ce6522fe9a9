"""``python -m modelhub_puller serve|migrate|check-config``."""

from __future__ import annotations

import sys

from modelhub_common.service_main import run_service
from modelhub_puller import bootstrap
from modelhub_puller.settings import ENV_PREFIX, PullerSettings


def main() -> int:
    return run_service(
        service=bootstrap.SERVICE,
        description=(PullerSettings.__doc__ or "").strip(),
        load_settings=lambda: PullerSettings(),  # values come from the environment
        env_prefix=ENV_PREFIX,
        serve=bootstrap.serve,
        migrate=bootstrap.run_migrations,
    )


if __name__ == "__main__":
    sys.exit(main())
