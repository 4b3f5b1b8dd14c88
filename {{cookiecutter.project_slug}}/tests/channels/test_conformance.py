"""The backend conformance suite: every backend passes every test here against its real broker."""

from __future__ import annotations

import asyncio
import random

import pytest

from app.channels import BaseChannelLayer, ChannelFull, LayerClosed, base
from app.channels.config import import_backend

from ..brokers import distributed_backends
from ..conftest import LayerFactory

TIMEOUT = 10


async def receive(layer, channel: str, timeout: float = TIMEOUT) -> dict:  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def assert_nothing(layer, channel: str, wait: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), wait)


def two_layers(make_layer: LayerFactory, backend: str) -> tuple[BaseChannelLayer, BaseChannelLayer]:
    """Two processes' layers; the in-memory layer cannot cross instances, so it plays both."""
    first = make_layer()
    return first, (first if backend == "inmemory" else make_layer())


async def test_send_receive_named_channel(make_layer: LayerFactory) -> None:
    layer = make_layer()
    await layer.send("test.named", {"type": "test.message", "text": "hello"})
    assert await receive(layer, "test.named") == {"type": "test.message", "text": "hello"}


async def test_named_channel_is_fifo(make_layer: LayerFactory) -> None:
    layer = make_layer()
    for n in range(20):
        await layer.send("test.fifo", {"type": "m", "n": n})
    assert [(await receive(layer, "test.fifo"))["n"] for _ in range(20)] == list(range(20))


async def test_process_local_channel(make_layer: LayerFactory) -> None:
    layer = make_layer()
    channel = await layer.new_channel()
    assert "!" in channel
    assert channel != await layer.new_channel()
    await layer.send(channel, {"type": "test.message", "n": 1})
    assert await receive(layer, channel) == {"type": "test.message", "n": 1}


@pytest.mark.parametrize("backend", distributed_backends())  # the in-memory layer does not cross instances
async def test_send_to_another_process_channel(make_layer: LayerFactory) -> None:
    receiver, sender = make_layer(), make_layer()
    channel = await receiver.new_channel()
    for n in range(5):
        await sender.send(channel, {"type": "m", "n": n})
    assert [(await receive(receiver, channel))["n"] for _ in range(5)] == list(range(5))
    with pytest.raises(ValueError, match="another process"):
        await sender.receive(channel)


async def test_groups(make_layer: LayerFactory) -> None:
    layer = make_layer()
    one, two = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room:a", one)
    await layer.group_add("room:a", two)
    await layer.group_send("room:a", {"type": "chat.message", "text": "hi"})
    assert (await receive(layer, one))["text"] == "hi"
    assert (await receive(layer, two))["text"] == "hi"
    await layer.group_discard("room:a", one)
    await layer.group_send("room:a", {"type": "chat.message", "text": "second"})
    assert (await receive(layer, two))["text"] == "second"
    await assert_nothing(layer, one)


async def test_group_with_named_channel_and_two_processes(make_layer: LayerFactory, backend: str) -> None:
    first, second = make_layer(), make_layer()
    local = await first.new_channel()
    await first.group_add("grp", local)
    await first.group_add("grp", "worker.named")
    remote = None
    if backend != "inmemory":
        remote = await second.new_channel()
        await second.group_add("grp", remote)
    sender = second if backend != "inmemory" else first
    await sender.group_send("grp", {"type": "g", "n": 1})
    assert (await receive(first, local))["n"] == 1
    assert (await receive(first, "worker.named"))["n"] == 1
    if remote is not None:
        assert (await receive(second, remote))["n"] == 1
        # a channel of another process can be added to a group from here, and discarded again
        await first.group_add("other", remote)
        await first.group_send("other", {"type": "g", "n": 2})
        assert (await receive(second, remote))["n"] == 2
        await first.group_discard("other", remote)
        await first.group_send("other", {"type": "g", "n": 3})
        await assert_nothing(second, remote)


async def test_group_discard_of_unknown_member_is_harmless(make_layer: LayerFactory) -> None:
    layer = make_layer()
    await layer.group_discard("nobody-here", "never.added")
    await layer.group_send("nobody-here", {"type": "g"})


async def test_capacity_named(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=3)
    for n in range(3):
        await layer.send("test.full", {"type": "m", "n": n})
    with pytest.raises(ChannelFull, match=r"test\.full"):
        await layer.send("test.full", {"type": "m", "n": 3})
    assert (await receive(layer, "test.full"))["n"] == 0


async def test_capacity_local(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=3)
    channel = await layer.new_channel()
    for n in range(3):
        await layer.send(channel, {"type": "m", "n": n})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "m", "n": 3})
    # a group send to a full channel drops silently instead
    await layer.group_add("g", channel)
    await layer.group_send("g", {"type": "m", "n": 4})
    assert [(await receive(layer, channel))["n"] for _ in range(3)] == [0, 1, 2]
    await assert_nothing(layer, channel)


async def test_expiry(make_layer: LayerFactory) -> None:
    layer = make_layer(expiry=1)
    channel = await layer.new_channel()
    await layer.send("test.expiring", {"type": "m"})
    await layer.group_add("g", channel)
    await asyncio.sleep(1.5)
    await assert_nothing(layer, "test.expiring")
    await layer.send("test.expiring", {"type": "m", "fresh": True})
    assert (await receive(layer, "test.expiring"))["fresh"] is True


async def test_group_expiry(make_layer: LayerFactory) -> None:
    layer = make_layer(group_expiry=1)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.group_add("g", "test.named-member")
    await asyncio.sleep(1.6)
    await layer.group_send("g", {"type": "m"})
    await assert_nothing(layer, channel)
    await assert_nothing(layer, "test.named-member")


async def test_cancelled_receive_loses_nothing(make_layer: LayerFactory) -> None:
    layer = make_layer()
    for channel in ("test.cancel", await layer.new_channel()):
        task = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await layer.send(channel, {"type": "m", "n": 1})
        assert (await receive(layer, channel))["n"] == 1
        await assert_nothing(layer, channel, 0.3)


async def test_racing_cancellations_neither_lose_nor_duplicate(make_layer: LayerFactory, backend: str) -> None:
    sender, receiver = two_layers(make_layer, backend)
    total = 200
    got: list[int] = []
    for channel in ("test.race", await receiver.new_channel()):
        got.clear()

        async def produce(channel: str = channel) -> None:
            for n in range(total):
                await sender.send(channel, {"type": "m", "n": n})
                if n % 20 == 0:
                    await asyncio.sleep(0.01)

        producer = asyncio.create_task(produce())
        rng = random.Random(7)
        while len(got) < total:
            if producer.done() and producer.exception():
                raise producer.exception()  # type: ignore[misc]
            try:
                message = await asyncio.wait_for(receiver.receive(channel), rng.choice((0.0005, 0.002, 0.05, 5)))
            except TimeoutError:
                continue
            got.append(message["n"])
        await producer
        assert got == list(range(total))


# backends whose inbox reader waits for a full local channel instead of dropping for it
BACKPRESSURED = [name for name in distributed_backends() if import_backend(name).inbox_backpressure]


@pytest.mark.parametrize("backend", BACKPRESSURED)
async def test_a_burst_over_capacity_waits_for_the_reader(make_layer: LayerFactory) -> None:
    sender, receiver = make_layer(), make_layer(capacity=20)
    slow, other = await receiver.new_channel(), await receiver.new_channel()
    await asyncio.gather(*(sender.send(slow, {"type": "m", "n": n}) for n in range(60)))
    await sender.send(other, {"type": "m", "n": -1})
    await asyncio.sleep(0.5)  # the reader took the burst from the broker: 20 fit, the rest wait
    assert [(await receive(receiver, slow))["n"] for _ in range(60)] == list(range(60))
    assert (await receive(receiver, other))["n"] == -1
    assert receiver.dropped == 0


@pytest.mark.parametrize("backend", BACKPRESSURED)
async def test_a_channel_nobody_reads_loses_only_its_overflow(
    make_layer: LayerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "PARK_WAIT", 0.5)
    sender, receiver = make_layer(), make_layer(capacity=5)
    stuck, live = await receiver.new_channel(), await receiver.new_channel()
    for n in range(8):
        await sender.send(stuck, {"type": "m", "n": n})
    await sender.send(live, {"type": "m", "n": 99})
    assert (await receive(receiver, live))["n"] == 99  # another channel is not held up for long
    async with asyncio.timeout(TIMEOUT):
        while receiver.dropped < 3:  # noqa: ASYNC110 - the overflow goes once PARK_WAIT passed
            await asyncio.sleep(0.05)
    assert receiver.dropped == 3
    assert [(await receive(receiver, stuck))["n"] for _ in range(5)] == list(range(5))


async def test_flush(make_layer: LayerFactory) -> None:
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.send("test.flush", {"type": "m"})
    await layer.group_add("g", channel)
    await layer.flush()
    await assert_nothing(layer, "test.flush")
    await layer.group_send("g", {"type": "m"})
    await assert_nothing(layer, channel)


async def test_close_is_idempotent_and_final(make_layer: LayerFactory) -> None:
    layer = make_layer()
    await layer.new_channel()
    await layer.close()
    await layer.close()
    with pytest.raises(LayerClosed, match="closed"):
        await layer.send("test.closed", {"type": "m"})
    with pytest.raises(LayerClosed):
        await layer.receive("test.closed")


async def test_large_and_binary_payloads(make_layer: LayerFactory, backend: str) -> None:
    layer, other = two_layers(make_layer, backend)
    blob = bytes(range(256)) * 4096  # 1 MiB
    await layer.send("test.big", {"type": "m", "body": blob, "nested": {"b": b"\x00\xff"}})
    message = await receive(layer, "test.big")
    assert message["body"] == blob and message["nested"]["b"] == b"\x00\xff"
    channel = await other.new_channel()
    await other.group_add("big", channel)
    await layer.group_send("big", {"type": "m", "body": blob})
    assert (await receive(other, channel))["body"] == blob


async def test_thousand_member_group(make_layer: LayerFactory) -> None:
    layer = make_layer()
    channels = [await layer.new_channel() for _ in range(1000)]
    for channel in channels:
        await layer.group_add("big-room", channel)
    for n in range(3):
        await layer.group_send("big-room", {"type": "m", "n": n})
    for channel in channels:
        assert [(await receive(layer, channel))["n"] for _ in range(3)] == [0, 1, 2]


async def test_many_concurrent_tasks(make_layer: LayerFactory, backend: str) -> None:
    sender, receiver = two_layers(make_layer, backend)
    channels = [await receiver.new_channel() for _ in range(10)] + [f"test.concurrent{n}" for n in range(5)]

    async def send_all(channel: str) -> None:
        await asyncio.gather(*(sender.send(channel, {"type": "m", "n": n}) for n in range(20)))

    async def receive_all(channel: str) -> list[int]:
        return sorted([(await receive(receiver, channel))["n"] for _ in range(20)])

    results = await asyncio.gather(*(receive_all(c) for c in channels), *(send_all(c) for c in channels))
    assert all(result == list(range(20)) for result in results[: len(channels)])


# ---------------------------------------------------------------- the seed's permissive semantics


async def test_any_dict_is_a_message(make_layer: LayerFactory, backend: str) -> None:
    """Channels and the seed accept any dict: ``type`` matters only to a consumer that dispatches."""
    receiver, sender = two_layers(make_layer, backend)
    local = await receiver.new_channel()
    await receiver.group_add("typeless", local)
    await sender.send("test.typeless", {"text": "no type"})
    await sender.send(local, {})
    await sender.group_send("typeless", {"n": 1, "body": b"\x00"})
    assert await receive(receiver, "test.typeless") == {"text": "no type"}
    assert await receive(receiver, local) == {}
    assert await receive(receiver, local) == {"n": 1, "body": b"\x00"}


async def test_close_wakes_pending_receives(make_layer: LayerFactory) -> None:
    layer = make_layer()
    local = await layer.new_channel()
    waiting = [asyncio.create_task(layer.receive(channel)) for channel in (local, local, "test.pending")]
    await asyncio.sleep(0.3)
    await asyncio.wait_for(layer.close(), TIMEOUT)
    for task in waiting:  # every one of them, the two on one channel included
        with pytest.raises(LayerClosed):
            await asyncio.wait_for(task, TIMEOUT)


async def test_a_received_message_frees_its_slot_at_once(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=2)
    for channel in ("test.slots", await layer.new_channel()):
        for n in range(2):
            await layer.send(channel, {"n": n})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"n": 2})
        assert (await receive(layer, channel))["n"] == 0
        await layer.send(channel, {"n": 2})  # takes the received one's slot, at once
        assert [(await receive(layer, channel))["n"] for _ in range(2)] == [1, 2]


async def test_expiry_holds_for_messages_already_in_the_process(make_layer: LayerFactory, backend: str) -> None:
    """A message this process has taken from the broker but not handed out still expires."""
    receiver = make_layer(expiry=1)
    sender = receiver if backend == "inmemory" else make_layer(expiry=1)
    local = await receiver.new_channel()
    await receiver.group_add("expiring", local)
    await sender.send(local, {"n": 1})
    await sender.group_send("expiring", {"n": 2})
    await asyncio.sleep(1.5)  # taken into this process's channel at once, expired there since
    await assert_nothing(receiver, local)
    await sender.send(local, {"n": 3})
    assert (await receive(receiver, local))["n"] == 3


# backends whose named reads stop the moment their receive leaves (the others run out receive_timeout)
CANCEL_SAFE = [name for name in distributed_backends() if import_backend(name).named_reads_cancel_safe]


@pytest.mark.parametrize("backend", CANCEL_SAFE)
async def test_a_named_message_goes_to_the_process_that_waits(make_layer: LayerFactory) -> None:
    """A process whose receive gave up holds nothing back: the next message reaches the one waiting."""
    left, waiting = make_layer(), make_layer()
    await assert_nothing(left, "test.contended", wait=0.5)  # A's receive times out (is cancelled)
    receiver = asyncio.create_task(waiting.receive("test.contended"))
    await asyncio.sleep(0.3)
    for n in range(3):
        await left.send("test.contended", {"n": n})
        assert (await asyncio.wait_for(asyncio.shield(receiver), TIMEOUT))["n"] == n
        receiver = asyncio.create_task(waiting.receive("test.contended"))
    receiver.cancel()
