"""The Session cache of one process and the writes of another, on the same database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fhirbox.models.session import Session, TokenHashes
from fhirbox.oauth.sessions import SessionCache, close_session
from fhirbox.storage import open_store
from fhirbox.storage.base import Store
from fhirbox.storage.postgres import PostgresStore
from tests.support import eventually


@contextlib.asynccontextmanager
async def two_processes(database_url: str) -> AsyncIterator[tuple[Store, Store, SessionCache]]:
    """Two stores on one database, standing for two server processes, and a Session cache on the
    first. No change poll runs during a test (an hour apart): only what ``catch_up`` does counts."""
    here, there = open_store(database_url), open_store(database_url)
    await here.open()
    await there.open()
    here.start_change_feed(3600)
    there.start_change_feed(3600)
    try:
        yield here, there, SessionCache(here)
    finally:
        await here.close()
        await there.close()


async def listening(store: Store) -> Any:
    """The PostgreSQL store's change-feed connection, once it listens."""
    assert isinstance(store, PostgresStore)
    return await eventually(lambda: store._feed_conn)


async def _open_session(store: Store, n: int) -> str:
    session_id = f"0199c0de-0000-7000-8000-{n:012d}"
    session = Session.new(
        session_id=session_id,
        client_id="worker",
        issuer="http://fhirbox.test",
        now=1_700_000_000,
        audience=None,
        scope=None,
        tokens=TokenHashes(f"{n:064x}", 2_000_000_000, None, None),
        retention=3600,
    )
    body: dict[str, Any] = session.body
    await store.mutate("Session", session_id, lambda _current: dict(body))
    return session_id


async def two_cached_sessions_and_the_feed_held(
    here: Store, there: Store, cache: SessionCache
) -> tuple[Any, str, str]:
    """Two Sessions opened by the other process and cached here, then what this process's feed
    receives held back (answers to fences included): the feed's connection and the two Session ids."""
    assert isinstance(here, PostgresStore)
    feed = await listening(here)
    first, second = await _open_session(there, 1), await _open_session(there, 2)
    assert await here.catch_up()  # their notifications here, before they are cached
    for session_id in (first, second):
        assert await cache.get(session_id) is not None
    feed._transport.pause_reading()
    return feed, first, second


async def test_a_session_closed_by_another_process_is_seen_closed_as_soon_as_its_close_returns(
    database_url: str,
) -> None:
    """Two stores on one database stand for two server processes. As soon as one has closed a Session
    (its write acknowledged), the other's cache answers it closed, never the active Session it held."""
    async with two_processes(database_url) as (_here, there, cache):
        for n in range(20):
            session_id = await _open_session(there, n)
            cached = await cache.get(session_id)
            assert cached is not None and cached.session.active
            await close_session(there, session_id, "revoked", now=1_700_000_100, retention=3600)
            after = await cache.get(session_id)
            assert after is not None and not after.session.active, f"Session {n} still active here"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # SQLite has no notifications
async def test_a_late_notification_of_a_closed_session_is_waited_for_not_missed(database_url: str) -> None:
    """PostgreSQL: the notification that another process closed a Session may reach this process
    after the close was acknowledged (the listening backend not yet scheduled, the event loop busy).
    Its arrival is held back here; the cache still answers the Session closed, once it has arrived."""
    async with two_processes(database_url) as (here, there, cache):
        feed = await listening(here)
        session_id = await _open_session(there, 1)
        cached = await cache.get(session_id)
        assert cached is not None and cached.session.active
        transport = feed._transport
        transport.pause_reading()  # what the feed's connection receives waits ...
        asyncio.get_running_loop().call_later(0.2, transport.resume_reading)  # ... 200 ms
        await close_session(there, session_id, "revoked", now=1_700_000_100, retention=3600)
        after = await cache.get(session_id)
        assert after is not None and not after.session.active


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_request_that_gives_up_while_waiting_does_not_fail_the_others_waiting_with_it(
    database_url: str,
) -> None:
    """Requests arriving together wait for one shared fence; one of them cancelled (a client gone, a
    timeout) leaves the others' answers as they would have been."""
    async with two_processes(database_url) as (here, there, cache):
        feed, first, second = await two_cached_sessions_and_the_feed_held(here, there, cache)
        gone = asyncio.ensure_future(cache.get(first))
        waiting = asyncio.ensure_future(cache.get(second))
        # Both wait for the fence now (sent, its answer held back); the first gives up.
        await eventually(
            lambda: here._fences is not None and not here._fences.done() and not here._next_fence
        )
        assert not gone.done() and not waiting.done()
        gone.cancel()
        feed._transport.resume_reading()
        answered = await asyncio.wait_for(waiting, 10)
        assert answered is not None and answered.session.active
        assert gone.cancelled()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_requests_waiting_for_a_fence_are_answered_when_the_fence_task_is_cancelled(
    database_url: str,
) -> None:
    """The task sending fences cancelled while one is out (a shutdown cancelling what runs): the
    requests waiting on it, and those that arrived meanwhile, are answered from the database instead
    of waiting forever."""
    async with two_processes(database_url) as (here, there, cache):
        feed, first, second = await two_cached_sessions_and_the_feed_held(here, there, cache)
        out = asyncio.ensure_future(cache.get(first))
        await eventually(
            lambda: here._fences is not None and not here._fences.done() and not here._next_fence
        )
        queued = asyncio.ensure_future(cache.get(second))  # waits for the next fence
        await eventually(lambda: here._next_fence is not None)
        fences = here._fences
        assert fences is not None
        fences.cancel()
        try:
            answers = await asyncio.wait_for(asyncio.gather(out, queued), 10)
        finally:
            feed._transport.resume_reading()
        assert [answer is not None and answer.session.active for answer in answers] == [True, True]
