"""Work a server process does on its own, every so often, between ``start`` and ``stop`` (the app's
start and stop hooks): purging expired Sessions, assertion ids and old AuditEvents."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

log = logging.getLogger("fhirbox.background")


class Periodic(ABC):
    """Runs ``run_once`` every ``interval`` seconds in the background; a failure is logged and the
    job runs again at the next interval."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def run_once(self) -> None:
        """One round of the job."""

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("%s failed", type(self).__name__)
            await asyncio.sleep(self.interval)
