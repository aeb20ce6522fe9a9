"""FastAPI dependencies: the verified caller and the puller's services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from modelhub_common.auth import Principal, parse_authorization_header, verify_token
from modelhub_puller.adapters.event_bus import PullEventBus
from modelhub_puller.service_layer.pulls import PullService
from modelhub_puller.service_layer.store_models import StoredModelService
from modelhub_puller.settings import PullerSettings


@dataclass
class Services:
    settings: PullerSettings
    pulls: PullService
    stored: StoredModelService
    bus: PullEventBus


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def current_principal(request: Request) -> Principal:
    settings: PullerSettings = request.app.state.settings
    token = parse_authorization_header(request.headers.get("authorization"))
    return verify_token(token, settings.jwt_secret.get_secret_value(), issuer=settings.jwt_issuer)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
Svc = Annotated[Services, Depends(services)]
