"""FastAPI dependencies: the rag service's use cases (the caller: modelhub_common.webapp.CurrentPrincipal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

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


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


ServicesDep = Annotated[Services, Depends(services)]
