"""Every job a server can show: the ones this process writes, and the rest of its backend.

A job whose lines reach this process (its runner runs here) is served from its ``LiveLog``
(ring first, then the backend); any other job from the backend's ``open_log``. Opened logs
are cached (at most ``FILE_LOG_CACHE``) so that every stream of a job shares one reader.
"""

from __future__ import annotations

from collections import OrderedDict

import trio

from logstream.backends.protocol import Backend, Job, JobLog
from logstream.joblog import LiveLog
from logstream.trioutil import wait_any

FILE_LOG_CACHE = 256


class Catalog:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._live: dict[str, LiveLog] = {}
        self._stored: OrderedDict[str, JobLog] = OrderedDict()
        self._changed = trio.Event()

    def add_live(self, log: LiveLog) -> None:
        self._live[log.job.id] = log
        self.notify()

    def retire(self, job_id: str) -> None:
        """The job ended and its end is stored: serve it from the backend from now on."""
        self._live.pop(job_id, None)

    def live_logs(self) -> list[LiveLog]:
        return list(self._live.values())

    def notify(self) -> None:
        """A job of this process started or ended: wake job-list streams."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Return when a job may have changed: here (at once) or in the backend."""
        await wait_any(self._changed.wait, self.backend.wait_changed)

    async def get(self, job_id: str) -> JobLog:
        """The job's log, its ``job`` and ``last`` as of now; raises ``UnknownJob``.

        A job another process writes is refreshed from the backend on every call.
        """
        if live := self._live.get(job_id):
            return live
        cached = self._stored.get(job_id)
        if cached is not None:
            self._stored.move_to_end(job_id)
            await cached.refresh()
            return cached
        log = await self.backend.open_log(job_id)
        # Another request may have opened it meanwhile: keep one reader per job.
        cached = self._stored.setdefault(job_id, log)
        if len(self._stored) > FILE_LOG_CACHE:
            self._stored.popitem(last=False)
        if cached is not log:
            await cached.refresh()
        return cached

    async def jobs(self, limit: int = 500) -> list[Job]:
        """The newest jobs first; those of this process as they are now."""
        found = await self.backend.list_jobs(limit)
        return [live.job if (live := self._live.get(job.id)) else job for job in found]
