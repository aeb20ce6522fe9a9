"""What every registry command shares: where the registry is, the token, and how errors reach the user.

Each sub-app (``models``, ``users`` ...) is made by :func:`registry_app`. Its callback only records the
``--registry-url`` / ``--token`` / ``--env-file`` options; they are resolved when a command asks for a client,
so ``--help`` works without a running stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from modelhub_cli import render
from modelhub_cli.client import RegistryClient
from modelhub_cli.endpoints import EndpointsError, load_endpoints
from modelhub_cli.errors import CliError

URL_KEY = "MODELHUB_REGISTRY_URL"
TOKEN_KEY = "MODELHUB_TOKEN"


@dataclass(frozen=True)
class RegistryOptions:
    registry_url: str | None = None
    token: str | None = None
    env_file: Path | None = None


@dataclass(frozen=True)
class RegistryTarget:
    url: str
    token: str


def resolve_target(options: RegistryOptions) -> RegistryTarget:
    """Options first, then MODELHUB_* variables, then the endpoints file that `make up` writes."""
    try:
        endpoints = load_endpoints(options.env_file)
    except EndpointsError as exc:
        raise CliError(str(exc)) from exc
    url = options.registry_url or endpoints.get(URL_KEY)
    if not url:
        raise CliError(
            "no registry URL is configured",
            hint=f"run `make up` (it writes .modelhub/endpoints.env), set {URL_KEY}, or pass --registry-url",
        )
    token = options.token or endpoints.get(TOKEN_KEY)
    if not token:
        raise CliError(
            "no token is configured",
            hint=f"run `make up` (it writes an admin token to .modelhub/endpoints.env), set {TOKEN_KEY}, "
            "or pass --token",
        )
    return RegistryTarget(url, token)


class ReportingGroup(TyperGroup):
    """Turns a :class:`CliError` from any command of the group into a red message and exit code 1.

    Catching it here, once, keeps tracebacks away from users without wrapping every command.
    """

    # ``Any``: the parameter's declared type is a Context class private to typer (its vendored click).
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            render.print_error(exc)
            raise typer.Exit(1) from None


def _record_options(
    ctx: typer.Context,
    registry_url: Annotated[
        str | None,
        typer.Option("--registry-url", help=f"the registry's base URL (default: ${URL_KEY}, then endpoints.env)"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help=f"bearer token (default: ${TOKEN_KEY}, then endpoints.env)", show_default=False),
    ] = None,
    env_file: Annotated[
        Path | None, typer.Option("--env-file", help="endpoints file to read instead of .modelhub/endpoints.env")
    ] = None,
) -> None:
    ctx.obj = RegistryOptions(registry_url, token, env_file)


def registry_app(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        cls=ReportingGroup,
        callback=_record_options,
        no_args_is_help=True,
        add_completion=False,
    )


@contextmanager
def open_client(ctx: typer.Context) -> Iterator[RegistryClient]:
    options = ctx.find_object(RegistryOptions) or RegistryOptions()
    target = resolve_target(options)
    with RegistryClient(target.url, target.token) as client:
        yield client


# Arguments and options several command modules share.
ModelId = Annotated[
    str, typer.Argument(metavar="ID", help="the model's id, e.g. support-bot or hf.co/user/repo:Q4_K_M")
]
AsJson = Annotated[bool, typer.Option("--json", help="print the registry's raw JSON (for scripts)")]
