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

import trio
from trio.lowlevel import (
    Abort,
    Task,
    current_task,
    reschedule,
    spawn_system_task,
    wait_task_rescheduled,
)

#: With fewer tasks waiting than this, every change wakes them at once: a round of writes to
#: a few clients is cheap, and waiting would only add latency.
COALESCE_FROM = 16
#: The longest a change waits for the previous round of wake-ups to finish: the delay that
#: coalescing may add to a line (a round that takes longer, or a client stuck in a write,
#: does not hold the others beyond it).
MAX_COALESCE_S = 0.02
#: A timer task that has had nothing to do for this long ends (another starts when needed).
TIMER_IDLE_S = 1.0


class Changes:
    """The tasks waiting for something to change, woken together by ``notify``.

    Coalescing: while tasks woken by the previous ``notify`` are still busy (writing to their
    clients), a new change does not wake those already back: they would each write a line or
    two, and with hundreds of clients the writes per second outgrow what one core can do.
    The change is held until every task of that round is waiting again (then all wake for
    everything that arrived meanwhile, in one write each) or ``MAX_COALESCE_S`` has passed.
    When a wake-up is of fewer than ``COALESCE_FROM`` tasks, the next change is not held.
    """

    __slots__ = ("_held_since", "_parked", "_round", "_timer_armed", "_timer_running")

    def __init__(self) -> None:
        self._parked: dict[Task, None] = {}
        #: The tasks of the last round of wake-ups that are not waiting again yet.
        self._round: set[Task] = set()
        #: When a change was first held (``None``: none is).
        self._held_since: float | None = None
        self._timer_armed = trio.Event()
        self._timer_running = False

    @property
    def waiting(self) -> int:
        return len(self._parked)

    async def wait(self) -> None:
        """Until the next ``notify`` (or an ``interrupt`` of this task)."""
        task = current_task()
        round_ = self._round
        if round_:
            round_.discard(task)
            if not round_ and self._held_since is not None:
                # The last of the round is back and a change is held: it is for everyone.
                self._wake_all()
                await trio.lowlevel.checkpoint()
                return
        self._parked[task] = None
        task.custom_sleep_data = self

        def abort(_: object) -> Abort:
            self._parked.pop(task, None)
            task.custom_sleep_data = None
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def notify(self) -> None:
        """Wake every task waiting now (or, coalescing, soon: see the class)."""
        if not self._parked:
            return
        if self._round:  # the last wake-up was of many tasks, and some are still busy
            if self._held_since is None:
                self._held_since = trio.current_time()
                self._arm_timer()
            return
        self._wake_all()

    def _wake_all(self) -> None:
        self._held_since = None
        parked, self._parked = self._parked, {}
        for task in parked:
            task.custom_sleep_data = None
            reschedule(task)
        self._round = set(parked) if len(parked) >= COALESCE_FROM else set()

    def _unpark(self, task: Task) -> bool:
        if task not in self._parked:
            return False
        del self._parked[task]
        task.custom_sleep_data = None
        reschedule(task)
        return True

    def _arm_timer(self) -> None:
        self._timer_armed.set()
        if not self._timer_running:
            self._timer_running = True
            spawn_system_task(self._run_timer, name="logstream.wakeups.Changes timer")

    async def _run_timer(self) -> None:
        """Release a held change at ``MAX_COALESCE_S`` at the latest; end when idle."""
        try:
            while True:
                with trio.move_on_after(TIMER_IDLE_S):
                    await self._timer_armed.wait()
                if not self._timer_armed.is_set():
                    return
                self._timer_armed = trio.Event()
                held_since = self._held_since
                if held_since is None:
                    continue
                await trio.sleep_until(held_since + MAX_COALESCE_S)
                if self._held_since == held_since:
                    self._wake_all()
        finally:
            self._timer_running = False


def interrupt(task: Task) -> bool:
    """Wake ``task`` if it waits in a ``Changes``; whether it did."""
    changes = task.custom_sleep_data
    return isinstance(changes, Changes) and changes._unpark(task)
