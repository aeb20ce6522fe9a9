"""``python -m modelhub_rag serve|migrate|check-config|reindex``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from modelhub_common.errors import ModelhubError
from modelhub_common.logconfig import configure_logging
from modelhub_common.service_main import run_service
from modelhub_rag import bootstrap
from modelhub_rag.settings import ENV_PREFIX, RagSettings


def reindex_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelhub_rag reindex",
        description="Queue a re-index of knowledge collections onto the configured embedder and chunking. "
        "A running rag service publishes the queued work and its workers embed the files again.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("knowledge_ids", nargs="*", default=[], metavar="KNOWLEDGE_ID")
    target.add_argument("--all", action="store_true", help="every collection")
    args = parser.parse_args(argv)
    if not args.all and not args.knowledge_ids:
        parser.error("name collections or pass --all")
    try:
        settings = RagSettings()
    except ValidationError as exc:
        sys.stderr.write(f"invalid or missing settings (environment variables start with {ENV_PREFIX}): {exc}\n")
        return 2
    configure_logging(bootstrap.SERVICE, settings.log_level)
    try:
        results = asyncio.run(bootstrap.reindex(settings, [] if args.all else args.knowledge_ids))
    except ModelhubError as exc:
        sys.stderr.write(f"rag reindex failed: {exc.message}\n")
        return 1
    for result in results:
        sys.stdout.write(f"{result.collection_id}: {result.files} files queued for {result.embedder}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["reindex"]:
        return reindex_main(args[1:])
    return run_service(
        service=bootstrap.SERVICE,
        description=(RagSettings.__doc__ or "").strip() + " (also: reindex KNOWLEDGE_ID...|--all)",
        load_settings=lambda: RagSettings(),  # values come from the environment
        env_prefix=ENV_PREFIX,
        serve=bootstrap.serve,
        migrate=bootstrap.run_migrations,
        argv=args,
        app_factory=bootstrap.WORKER_APP,
    )


if __name__ == "__main__":
    sys.exit(main())
