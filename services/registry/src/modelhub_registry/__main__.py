"""``python -m modelhub_registry serve|migrate|check-config``."""

from __future__ import annotations

import sys

from modelhub_common.service_main import run_service
from modelhub_registry import bootstrap
from modelhub_registry.settings import ENV_PREFIX, RegistrySettings


def main() -> int:
    return run_service(
        service=bootstrap.SERVICE,
        description=(RegistrySettings.__doc__ or "").strip(),
        load_settings=lambda: RegistrySettings(),  # values come from the environment
        env_prefix=ENV_PREFIX,
        serve=bootstrap.serve,
        migrate=bootstrap.run_migrations,
        app_factory=bootstrap.WORKER_APP,
    )


if __name__ == "__main__":
    sys.exit(main())
