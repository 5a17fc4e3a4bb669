"""Waking the streams that wait on a log: all at once, or one alone, without a cancel scope.

Theory of operation
-------------------
An event stream spends its life waiting for its log's next line, and must also wake for two
other reasons: its keep-alive comment is due, or the server is shutting down. A
``trio.move_on_after`` around every wait did that, at a price: entering and leaving a cancel
scope (with its deadline in trio's timer heap) cost about 7 microseconds per wait, more than
a fifth of what a whole write to a client costs when a build writes one line at a time
(issue 13, docs/benchmarks.md).

``Changes`` replaces the ``trio.Event`` a log sets when it changes: ``wait`` parks the calling
task, ``notify`` reschedules every parked task. It also notes, on the parked task itself
(``Task.custom_sleep_data``, which trio reserves for whoever put the task to sleep), where the
task is parked, so that ``interrupt(task)`` can wake that one task alone: the keep-alive
ticker and ``shut_down`` use it instead of cancel scopes. A cancelled wait (the client went
away) unparks itself as any trio wait does.
"""

from __future__ import annotations

from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled


class Changes:
    """The tasks waiting for something to change, woken together by ``notify``.

    No coalescing of its own: a woken task runs in trio's next scheduler round and then sends
    everything new in one write, so with many streams each wakes at most once per round and
    writes grow under load by themselves. Holding a change until a whole round of streams was
    waiting again (built and measured for issue 13) changed nothing: 1,000 clients with 100
    one-line writes a second, 6.0 lines per write and p99 150-157 ms with it or without.
    """

    __slots__ = ("_parked",)

    def __init__(self) -> None:
        self._parked: dict[Task, None] = {}

    @property
    def waiting(self) -> int:
        return len(self._parked)

    async def wait(self) -> None:
        """Until the next ``notify`` (or an ``interrupt`` of this task)."""
        task = current_task()
        self._parked[task] = None
        task.custom_sleep_data = self

        def abort(_: object) -> Abort:
            self._parked.pop(task, None)
            task.custom_sleep_data = None
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def notify(self) -> None:
        """Wake every task waiting now."""
        if not self._parked:
            return
        parked, self._parked = self._parked, {}
        for task in parked:
            task.custom_sleep_data = None
            reschedule(task)

    def _unpark(self, task: Task) -> bool:
        if task not in self._parked:
            return False
        del self._parked[task]
        task.custom_sleep_data = None
        reschedule(task)
        return True


def interrupt(task: Task) -> bool:
    """Wake ``task`` if it waits in a ``Changes``; whether it did."""
    changes = task.custom_sleep_data
    return isinstance(changes, Changes) and changes._unpark(task)
