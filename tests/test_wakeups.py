"""Changes and interrupt: every waiter woken by a change, one alone by an interrupt."""

from __future__ import annotations

import trio
import trio.testing

from logstream.wakeups import COALESCE_FROM, MAX_COALESCE_S, Changes, interrupt


async def test_notify_wakes_every_waiter_and_only_those_waiting() -> None:
    changes = Changes()
    woken: list[int] = []

    async def waiter(n: int) -> None:
        await changes.wait()
        woken.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(waiter, n)
        await trio.testing.wait_all_tasks_blocked()
        assert changes.waiting == 3
        changes.notify()
    assert sorted(woken) == [0, 1, 2]
    assert changes.waiting == 0
    changes.notify()  # nobody waits: nothing happens


async def test_interrupt_wakes_one_task_and_later_notifies_skip_it() -> None:
    changes = Changes()
    tasks: dict[str, trio.lowlevel.Task] = {}
    woken: list[str] = []

    async def waiter(name: str) -> None:
        tasks[name] = trio.lowlevel.current_task()
        await changes.wait()
        woken.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "a")
        nursery.start_soon(waiter, "b")
        await trio.testing.wait_all_tasks_blocked()
        assert interrupt(tasks["a"])
        await trio.testing.wait_all_tasks_blocked()
        assert woken == ["a"]
        assert not interrupt(tasks["a"])  # no longer waiting
        changes.notify()
    assert woken == ["a", "b"]


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    changes = Changes()
    with trio.move_on_after(0.01):
        await changes.wait()
    assert changes.waiting == 0
    assert not interrupt(trio.lowlevel.current_task())


async def test_many_waiters_wake_once_per_round_not_once_per_change() -> None:
    """A change while a round of wake-ups is busy is held until the round is back."""
    changes = Changes()
    count = COALESCE_FROM + 4
    wakes: list[int] = []
    busy = trio.Event()  # the round's tasks "write" until this is set

    async def stream(n: int) -> None:
        await changes.wait()
        wakes.append(n)
        if n:
            await busy.wait()
        await changes.wait()  # the first one is back at once; the rest after `busy`
        wakes.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(stream, n)
        await trio.testing.wait_all_tasks_blocked()
        changes.notify()
        await trio.testing.wait_all_tasks_blocked()
        assert len(wakes) == count and changes.waiting == 1  # stream 0 is back
        changes.notify()  # held: the round is still busy
        await trio.testing.wait_all_tasks_blocked()
        assert len(wakes) == count
        busy.set()  # the round comes back; the last one back releases the held change
    assert sorted(wakes[count:]) == list(range(count))


async def test_a_held_change_waits_at_most_max_coalesce_s(autojump_clock: object) -> None:
    changes = Changes()
    stuck = trio.Event()
    woken_at: list[float] = []

    async def stream(n: int) -> None:
        await changes.wait()
        if n == 0:
            await stuck.wait()  # a client that does not read: never back
            return
        await changes.wait()
        woken_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for n in range(COALESCE_FROM + 1):
            nursery.start_soon(stream, n)
        await trio.testing.wait_all_tasks_blocked()
        changes.notify()
        await trio.testing.wait_all_tasks_blocked()
        held_at = trio.current_time()
        changes.notify()
        await trio.sleep(1)
        stuck.set()
    assert len(woken_at) == COALESCE_FROM
    assert all(t - held_at == MAX_COALESCE_S for t in woken_at)
