"""Every job a server can show: the ones this process runs, and the rest of the data dir."""

from __future__ import annotations

import threading
from collections import OrderedDict

import trio

from logstream.joblog import FileLog, JobLog, LiveLog
from logstream.problemlog import ProblemReader
from logstream.store import DataDir, Job, UnknownJob

FILE_LOG_CACHE = 256


class Catalog:
    def __init__(self, data_dir: DataDir) -> None:
        self.data_dir = data_dir
        self._live: dict[str, LiveLog] = {}
        self._files: OrderedDict[str, FileLog] = OrderedDict()
        self._changed = trio.Event()
        self._problem_readers: OrderedDict[str, ProblemReader] = OrderedDict()
        self._problem_lock = threading.Lock()

    def add_live(self, log: LiveLog) -> None:
        self._live[log.job.id] = log
        self.notify()

    def retire(self, job_id: str) -> None:
        """The job ended and its end is on disk: serve it from the data directory from now on."""
        self._live.pop(job_id, None)

    def live_logs(self) -> list[LiveLog]:
        return list(self._live.values())

    def notify(self) -> None:
        """A job started or ended: wake job-list streams."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    async def get(self, job_id: str) -> JobLog:
        """The job's log, its ``job`` and ``last`` as of now; raises ``UnknownJob``.

        A job another process runs is re-read from disk (in a worker thread) on every call.
        """
        if live := self._live.get(job_id):
            return live
        cached = self._files.get(job_id)
        if cached is not None:
            self._files.move_to_end(job_id)
            await cached.refresh()
            return cached
        self.data_dir.job_path(job_id)  # validates the ID
        log = await FileLog.open(self.data_dir, job_id)
        # Another request may have opened it meanwhile: keep one reader per job.
        cached = self._files.setdefault(job_id, log)
        if len(self._files) > FILE_LOG_CACHE:
            self._files.popitem(last=False)
        if cached is not log:
            await cached.refresh()
        return cached

    def jobs(self, limit: int = 500) -> list[Job]:
        """The newest jobs first (blocking reads of small files: call from a thread)."""
        found: list[Job] = []
        for job_id in self.data_dir.job_ids()[:limit]:
            if live := self._live.get(job_id):
                found.append(live.job)
                continue
            try:
                found.append(self.data_dir.read_job(job_id))
            except (UnknownJob, ValueError, OSError):
                continue  # just created, or removed meanwhile
        return found

    def problem_counts(self, job_id: str) -> dict[str, int]:
        """The job's error and warning counts (blocking reads of new records: from a thread)."""
        if live := self._live.get(job_id):
            return live.problems.shown_counts()
        with self._problem_lock:
            reader = self._problem_readers.get(job_id)
            if reader is None:
                reader = ProblemReader(self.data_dir.job_path(job_id))
                self._problem_readers[job_id] = reader
                if len(self._problem_readers) > FILE_LOG_CACHE * 4:
                    self._problem_readers.popitem(last=False)
            self._problem_readers.move_to_end(job_id)
            reader.read_new()
            return reader.problems.shown_counts()
