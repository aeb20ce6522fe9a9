"""``python -m modelhub_puller serve|migrate|check-config|import-gguf``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from modelhub_common.errors import ModelhubError
from modelhub_common.logconfig import configure_logging
from modelhub_common.service_main import run_service
from modelhub_puller import bootstrap
from modelhub_puller.settings import ENV_PREFIX, PullerSettings

IMPORT_COMMAND = "import-gguf"
logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == IMPORT_COMMAND:
        return import_main(args[1:])
    return run_service(
        service=bootstrap.SERVICE,
        description=(PullerSettings.__doc__ or "").strip()
        + f" Also: `{IMPORT_COMMAND} --name NAME --file PATH` stores a local GGUF file as a pulled model.",
        load_settings=lambda: PullerSettings(),  # values come from the environment
        env_prefix=ENV_PREFIX,
        serve=bootstrap.serve,
        migrate=bootstrap.run_migrations,
        argv=args,
    )


def import_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m modelhub_puller {IMPORT_COMMAND}",
        description="Store a local GGUF file in the model store exactly as a pull would (content-addressed blob "
        "and manifest) and announce it with a modelhub.pulls.v1.completed event. Importing the same file again "
        "does nothing.",
    )
    parser.add_argument("--name", required=True, help="model name, e.g. gemma3:270m (base model gemma3:270m)")
    parser.add_argument("--file", required=True, type=Path, help="path of the .gguf file")
    parser.add_argument("--template", help="chat template (Ollama Go template) stored as a template layer")
    parser.add_argument("--system", help="default system prompt stored as a system layer")
    parser.add_argument("--params", help="default options as JSON, e.g. '{\"temperature\": 0.7}'")
    args = parser.parse_args(argv)
    try:
        settings = PullerSettings()
    except ValidationError as exc:
        sys.stderr.write(f"invalid or missing settings (environment variables start with {ENV_PREFIX}): {exc}\n")
        return 2
    configure_logging(bootstrap.SERVICE, settings.log_level)
    params = None
    if args.params:
        try:
            params = json.loads(args.params)
        except ValueError as exc:
            sys.stderr.write(f"--params is not JSON: {exc}\n")
            return 2
        if not isinstance(params, dict):
            sys.stderr.write("--params must be a JSON object\n")
            return 2
    try:
        result = asyncio.run(
            bootstrap.import_gguf(
                settings, name=args.name, path=args.file, template=args.template, system=args.system, params=params
            )
        )
    except ModelhubError as exc:
        logger.error("import failed", extra={"code": exc.code, "error": exc.message})
        sys.stderr.write(f"import-gguf failed: {exc.message}\n")
        return 1
    state = "imported" if result.created else "already stored"
    sys.stderr.write(f"{result.base_model_id}: {state} ({result.model_digest})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
