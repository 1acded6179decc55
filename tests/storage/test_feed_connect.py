"""The PostgreSQL change feed's connect, stopped while a database does not answer."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from fhirbox.storage import postgres
from tests.support import eventually


@pytest.mark.parametrize("cancels", [1, 2])
async def test_a_stopped_connect_holds_nothing_up_and_leaves_no_error_behind(
    monkeypatch: pytest.MonkeyPatch, cancels: int
) -> None:
    monkeypatch.setattr(postgres, "FEED_CONNECT_TIMEOUT", 1.0)
    monkeypatch.setattr(postgres, "FEED_CANCEL_WAIT", 0.1)
    accepted, closed = asyncio.Event(), asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()  # a database that takes the connection and never answers
        await reader.read()  # until the client gives up and closes it
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        connect = asyncio.ensure_future(
            postgres._connect_to_the_end(f"postgresql://fhirbox@127.0.0.1:{port}/fhirbox", "feed:test")
        )
        await asyncio.wait_for(accepted.wait(), 10)
        for _ in range(cancels):
            connect.cancel()
            await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await connect
        assert not closed.is_set()  # the caller was let go before the connect's own timeout
        await asyncio.wait_for(closed.wait(), 10)  # the abandoned connect still ends, at its timeout
        await eventually(lambda: not [task for task in asyncio.all_tasks() if "connect" in repr(task)])
        await asyncio.sleep(0)  # the turn that runs the abandoned connect's done callback
        gc.collect()
        assert [context.get("message") for context in reported] == []
    finally:
        loop.set_exception_handler(previous)
        server.close()
        await server.wait_closed()
