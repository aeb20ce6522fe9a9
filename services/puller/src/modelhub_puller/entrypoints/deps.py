"""FastAPI dependencies: the puller's services (the caller: modelhub_common.webapp.CurrentPrincipal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

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


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]
