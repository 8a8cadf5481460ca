"""`GET /healthz`: 200 when PostgreSQL and Temporal answer, 503 naming the one that does not."""

from __future__ import annotations

import asyncio
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.context import ApiContext, context_of

router = APIRouter(tags=["health"])

CHECK_SECONDS = 3.0


async def _postgres(context: ApiContext) -> bool:
    try:
        async with asyncio.timeout(CHECK_SECONDS), context.db.session() as session:
            await session.execute(sa.text("SELECT 1"))
    except Exception:
        return False
    return True


async def _temporal(context: ApiContext) -> bool:
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            return await context.temporal.service_client.check_health()
    except Exception:
        return False


@router.get("/healthz")
async def healthz(context: Annotated[ApiContext, Depends(context_of)]) -> JSONResponse:
    postgres, temporal = await asyncio.gather(_postgres(context), _temporal(context))
    down = [name for name, ok in (("PostgreSQL", postgres), ("Temporal", temporal)) if not ok]
    if down:
        return JSONResponse(
            {
                "detail": f"{' and '.join(down)} not answering",
                "postgres": postgres,
                "temporal": temporal,
            },
            status_code=503,
        )
    return JSONResponse({"detail": "ok", "postgres": True, "temporal": True})
