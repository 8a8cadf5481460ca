"""What every route needs, built once per API process and kept on the app's state."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from temporalio.client import Client

from api.events import EventHub
from api.limits import RateLimiter
from runtime.settings import Settings
from storage.db import Database


@dataclass
class ApiContext:
    settings: Settings
    db: Database
    temporal: Client
    hub: EventHub
    limiter: RateLimiter


def context_of(request: Request) -> ApiContext:
    """The FastAPI dependency that hands a route its context."""
    return request.app.state.context
