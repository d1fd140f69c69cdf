"""Periodic background work tied to the application's lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)


@asynccontextmanager
async def every(interval: float, work: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Run ``work`` every ``interval`` seconds while the block runs, and once more at its end
    (so a graceful shutdown loses nothing that was queued)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await work()
            except Exception:  # a failed round is retried next round; the loop must survive
                log.exception("background work %s failed", getattr(work, "__qualname__", work))

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await work()
