"""What every route needs, built once per API process and kept on the app's state."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from temporalio.client import Client

from api.events import EventHub
from api.limits import RateLimiter, StreamSlots
from runtime.settings import Settings
from storage.db import Database


@dataclass
class ApiContext:
    settings: Settings
    db: Database
    temporal: Client
    hub: EventHub
    limiter: RateLimiter
    """Message submissions (QAI_RATE_LIMIT)."""
    actions: RateLimiter = field(default_factory=lambda: RateLimiter(120, 60))
    """Other costly requests (QAI_ACTION_RATE_LIMIT)."""
    failures: RateLimiter = field(default_factory=lambda: RateLimiter(10, 60))
    """Wrong tokens per address: past it, 429 before the token is even compared."""
    streams: StreamSlots = field(default_factory=lambda: StreamSlots(20, 1000))


def context_of(request: Request) -> ApiContext:
    """The FastAPI dependency that hands a route its context."""
    return request.app.state.context
