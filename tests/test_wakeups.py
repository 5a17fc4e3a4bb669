"""Changes and interrupt: every waiter woken by a change, one alone by an interrupt."""

from __future__ import annotations

import trio
import trio.testing

from logstream.wakeups import Changes, interrupt


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
