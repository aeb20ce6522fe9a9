"""FastAPI dependencies: the verified caller and the registry's services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from modelhub_common.auth import Principal
from modelhub_common.webapp import request_principal
from modelhub_registry.errors import ForbiddenError
from modelhub_registry.service_layer.base_models import BaseModelService
from modelhub_registry.service_layer.directory import DirectoryService
from modelhub_registry.service_layer.models import ModelService
from modelhub_registry.service_layer.transfer import TransferService
from modelhub_registry.settings import RegistrySettings


@dataclass
class Services:
    settings: RegistrySettings
    models: ModelService
    transfer: TransferService
    base_models: BaseModelService
    directory: DirectoryService


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


current_principal = request_principal


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise ForbiddenError("this needs the admin role")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]
