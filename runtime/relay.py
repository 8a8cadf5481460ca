"""Copying bytes between two stream connections, both ways, as every relay of qai does.

The gateway (previews of any backend), the local sandbox's host relay and registry proxy, and
envd inside the sandbox all relay with these, so both ends of a connection behave the same.
Standard library only, and no imports of qai: the local sandbox mounts this file next to envd,
which runs inside the sandbox with the standard library alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


async def pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    abort: asyncio.Event,
    on_data: Callable[[], None] | None = None,
) -> None:
    """Copy until EOF (then half-close), or until an error, which aborts both directions.

    `on_data()`, when given, is called for every chunk copied (the gateway counts traffic).
    """
    try:
        while data := await reader.read(65536):
            if on_data is not None:
                on_data()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        abort.set()
        return
    if writer.can_write_eof():
        with contextlib.suppress(ConnectionError, OSError):
            writer.write_eof()


async def relay(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until both sides are done (half-closes kept, so websockets work).

    A reset on either side closes both at once: otherwise a client whose upstream vanished would
    wait for an answer forever.
    """
    abort = asyncio.Event()
    pipes = asyncio.gather(pipe(a_reader, b_writer, abort), pipe(b_reader, a_writer, abort))
    aborted = asyncio.ensure_future(abort.wait())
    try:
        await asyncio.wait({pipes, aborted}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        a_writer.close()
        b_writer.close()
        aborted.cancel()
        with contextlib.suppress(Exception):
            await pipes
