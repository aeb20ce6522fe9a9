"""``python -m modelhub_rag serve|migrate|check-config``."""

from __future__ import annotations

import sys

from modelhub_common.service_main import run_service
from modelhub_rag import bootstrap
from modelhub_rag.settings import ENV_PREFIX, RagSettings


def main() -> int:
    return run_service(
        service=bootstrap.SERVICE,
        description=(RagSettings.__doc__ or "").strip(),
        load_settings=lambda: RagSettings(),  # values come from the environment
        env_prefix=ENV_PREFIX,
        serve=bootstrap.serve,
        migrate=bootstrap.run_migrations,
    )


if __name__ == "__main__":
    sys.exit(main())
