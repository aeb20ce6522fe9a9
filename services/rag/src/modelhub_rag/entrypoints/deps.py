"""FastAPI dependencies: the verified caller and the rag service's use cases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from modelhub_common.auth import Principal
from modelhub_common.webapp import request_principal
from modelhub_rag.errors import ForbiddenError
from modelhub_rag.service_layer.collections import CollectionService
from modelhub_rag.service_layer.files import FileService
from modelhub_rag.service_layer.ingestion import IngestionService
from modelhub_rag.service_layer.references import ReferenceService
from modelhub_rag.service_layer.retrieval import RetrievalService
from modelhub_rag.settings import RagSettings


@dataclass
class Services:
    settings: RagSettings
    collections: CollectionService
    files: FileService
    retrieval: RetrievalService
    ingestion: IngestionService
    references: ReferenceService


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
ServicesDep = Annotated[Services, Depends(services)]
