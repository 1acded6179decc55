"""The app's life under uvicorn (the ASGI lifespan protocol), run in-process."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from fhirbox.app import YOUNG_COLLECTION_AFTER, create_app
from fhirbox.settings import Settings


async def test_what_the_server_built_at_start_is_left_out_of_later_collections(settings: Settings) -> None:
    """A full garbage collection under load walked the whole server every few seconds (~90 ms each,
    every request in flight waiting); after startup those objects are frozen out of it."""
    app = create_app(settings)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    gc.unfreeze()
    thresholds = gc.get_threshold()
    life = asyncio.ensure_future(app({"type": "lifespan"}, inbox.get, outbox.put))  # type: ignore[arg-type]
    try:
        await inbox.put({"type": "lifespan.startup"})
        assert (await asyncio.wait_for(outbox.get(), 30))["type"] == "lifespan.startup.complete"
        assert gc.get_freeze_count() > 0
        assert gc.is_tracked(app) and not any(obj is app for obj in gc.get_objects())  # frozen
        # Young collections every 10,000 new objects, not every 700 (every other request).
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_AFTER > thresholds[0]
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(outbox.get(), 30))["type"] == "lifespan.shutdown.complete"
        await asyncio.wait_for(life, 30)
    finally:
        gc.unfreeze()  # the test process goes on creating and dropping apps
        gc.set_threshold(*thresholds)
