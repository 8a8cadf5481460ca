"""`python -m api`: the HTTP API alone, against DATABASE_URL (or the embedded PostgreSQL) and
TEMPORAL_ADDRESS. Ctrl-C, SIGTERM or SIGHUP stops it."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack

from api.server import ApiExposedError, check_exposure, running_api
from runtime.logs import configure_logging
from runtime.processes import stop_signals
from runtime.settings import Settings, settings_or_exit
from runtime.temporal import TemporalConnectionError, connect_temporal
from storage.errors import StorageError


async def serve(settings: Settings) -> None:
    from storage.embedded import database_url_for

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in stop_signals():
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(database_url_for(settings))
        client = await connect_temporal(settings)
        api_url = await stack.enter_async_context(running_api(settings, url, client))
        print(f"qai API: {api_url}  (docs: {api_url}/docs)", flush=True)
        await stop.wait()


def main() -> int:
    settings = settings_or_exit()
    configure_logging(settings.qai_log_format, settings.qai_log_level)
    try:
        check_exposure(settings)
        asyncio.run(serve(settings))
    except (ApiExposedError, TemporalConnectionError, StorageError) as error:
        print(f"qai: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
