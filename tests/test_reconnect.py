"""tail's reconnect rules as a pure object: no sockets, no clock, no sleeping."""

from __future__ import annotations

from logstream.reconnect import HEALTHY_S, MAX_BACKOFF_S, Reconnect


def new(reconnect_for_s: float = 600.0, retry_ms: int = 1000) -> Reconnect:
    return Reconnect("http://ci:8765", reconnect_for_s, retry_ms, jitter=lambda: 1.0)


def test_the_wait_doubles_from_the_servers_retry_up_to_the_cap() -> None:
    rules = new()
    rules.attempt_started(0.0)
    delays = []
    for now in range(1, 10):
        delays.append(
            rules.dropped(float(now), "refused", connected=False, progressed=False).delay_s
        )
        rules.attempt_started(float(now))
    assert delays == [1, 2, 4, 8, 16, MAX_BACKOFF_S, MAX_BACKOFF_S, MAX_BACKOFF_S, MAX_BACKOFF_S]


def test_a_server_asking_for_more_than_the_cap_gets_it() -> None:
    rules = new(retry_ms=60_000)
    rules.attempt_started(0.0)
    assert rules.dropped(1.0, "x", connected=False, progressed=False).delay_s == 60.0


def test_a_stream_that_delivered_lines_or_lasted_starts_the_backoff_over() -> None:
    rules = new()
    rules.attempt_started(0.0)
    for now in (1.0, 2.0, 3.0):
        rules.dropped(now, "x", connected=False, progressed=False)
        rules.attempt_started(now)
    assert rules.dropped(4.0, "x", connected=True, progressed=True).delay_s == 1.0
    rules.attempt_started(5.0)
    rules.dropped(6.0, "x", connected=True, progressed=False)
    rules.attempt_started(7.0)
    assert rules.dropped(7.0 + HEALTHY_S, "x", connected=True, progressed=False).delay_s == 1.0


def test_one_notice_per_outage_saying_whether_the_server_ever_answered() -> None:
    never = new()
    never.attempt_started(0.0)
    first = never.dropped(1.0, "refused", connected=False, progressed=False)
    assert first.notice == "cannot reach http://ci:8765 (refused); retrying"
    assert never.dropped(2.0, "refused", connected=False, progressed=False).notice is None
    lost = new()
    lost.attempt_started(0.0)
    assert lost.dropped(1.0, "reset", connected=True, progressed=True).notice == (
        "connection lost (reset); reconnecting"
    )


def test_it_gives_up_after_reconnect_for_s_without_an_answer() -> None:
    rules = new(reconnect_for_s=60.0)
    rules.attempt_started(0.0)
    rules.dropped(10.0, "reset", connected=True, progressed=True)  # answered at 10 s
    rules.attempt_started(10.0)
    assert rules.dropped(69.0, "refused", connected=False, progressed=False).give_up is None
    rules.attempt_started(69.0)
    retry = rules.dropped(70.0, "refused", connected=False, progressed=False)
    assert retry.give_up == "giving up: http://ci:8765 unreachable for 60 s (refused)"


def test_zero_means_never_give_up() -> None:
    rules = new(reconnect_for_s=0)
    rules.attempt_started(0.0)
    assert rules.dropped(1e9, "refused", connected=False, progressed=False).give_up is None


def test_the_jitter_spreads_waits_by_at_most_ten_percent() -> None:
    rules = Reconnect("s", 600.0, 1000)
    for _ in range(100):
        assert 1.0 <= rules.backoff_s() <= 1.1
