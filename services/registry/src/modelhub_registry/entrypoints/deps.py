"""FastAPI dependencies: the registry's services (the caller: modelhub_common.webapp.CurrentPrincipal)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from modelhub_registry.service_layer.base_models import BaseModelService
from modelhub_registry.service_layer.directory import DirectoryService
from modelhub_registry.service_layer.filters import FilterService
from modelhub_registry.service_layer.models import ModelService
from modelhub_registry.service_layer.passwords import PasswordService
from modelhub_registry.service_layer.tool_servers import ToolServerService
from modelhub_registry.service_layer.transfer import TransferService
from modelhub_registry.settings import RegistrySettings


@dataclass
class Services:
    settings: RegistrySettings
    models: ModelService
    transfer: TransferService
    base_models: BaseModelService
    directory: DirectoryService
    tool_servers: ToolServerService | None = None
    filters: FilterService | None = None
    passwords: PasswordService | None = None


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain function dependency in its thread pool, a thread hop on every request
    svc: Services = request.app.state.services
    return svc
