"""A socket's feed of one stream: seq order, each message once, and the seam between recovery and live."""

from __future__ import annotations

from app.chat.feed import Feed


def m(seq: int) -> dict[str, int]:
    return {"seq": seq}


def seqs(messages: list[dict[str, int]]) -> list[int]:
    return [message["seq"] for message in messages]


def test_live_messages_leave_in_order_once() -> None:
    feed = Feed()
    assert seqs(feed.offer(m(5))) == [5]  # the first live message sets where the feed stands
    assert feed.offer(m(7)) == [] and feed.gap
    assert seqs(feed.offer(m(6))) == [6, 7] and not feed.gap
    assert feed.offer(m(6)) == [] and feed.offer(m(3)) == []  # repeats and old ones are dropped


def test_the_seam_holds_live_messages_until_the_store_read_ends() -> None:
    feed = Feed()
    feed.recovering()
    assert feed.offer(m(41)) == [] and feed.offer(m(43)) == [] and feed.offer(m(42)) == []
    assert not feed.gap  # holding is not a gap
    assert seqs(feed.start(41)) == [42, 43]  # 41 came in the recovered history: not twice
    feed.recovering()  # a rejoin on the same socket
    assert feed.offer(m(43)) == []
    assert seqs(feed.start(44)) == [] and seqs(feed.offer(m(45))) == [45]


def test_a_gap_that_will_not_fill_is_skipped() -> None:
    feed = Feed()
    feed.start(0)
    assert feed.offer(m(3)) == [] and feed.gap
    assert seqs(feed.skip_gap()) == [3] and not feed.gap
