"""RabbitMQ-specific behaviour: broker-side fan-out, capacity, leases, expiry, restarts.

The shared broker serves most tests (each with its own prefix); the restart tests run a
private node (``rabbitmq_node``) that they stop, kill and start again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from app.channels import BrokerUnavailable, ChannelFull, ConfigurationError, LayerClosed
from app.channels.config import build_layer, get_channel_layer_from_env

from ..brokers import URLS, installed_backends, require_broker
from .rabbitmq_node import PrivateRabbitMQ, available, free_port

if "rabbitmq" not in installed_backends():  # not selected, or removed from the generated project
    pytest.skip("rabbitmq backend not selected", allow_module_level=True)

from app.channels.backends.rabbitmq import RabbitMQChannelLayer

WAIT = 10


@pytest.fixture
async def layers() -> AsyncIterator[list[RabbitMQChannelLayer]]:
    """Flushes, then closes, every layer a test appends (each deletes what it declared)."""
    made: list[RabbitMQChannelLayer] = []
    yield made
    open_layers = [layer for layer in made if not layer.closed]
    for layer in open_layers:
        await layer.flush()
    for layer in open_layers:
        await layer.close()


@pytest.fixture
def make(layers: list[RabbitMQChannelLayer]) -> Any:
    require_broker("rabbitmq")
    prefix = f"t{secrets.token_hex(5)}"

    def make(**config: Any) -> RabbitMQChannelLayer:
        layer = RabbitMQChannelLayer(**{"url": URLS["rabbitmq"], "prefix": prefix, **config})
        layers.append(layer)
        return layer

    return make


async def raw_channel(url: str = URLS["rabbitmq"]) -> Any:
    """A plain aio-pika connection and channel, to look at the broker from outside the layer."""
    import aio_pika

    connection = await aio_pika.connect(url, timeout=WAIT)
    return connection, await connection.channel(publisher_confirms=True, on_return_raises=True)


async def routable(layer: RabbitMQChannelLayer, group: str) -> bool:
    """Whether the broker has any binding for ``group`` (a mandatory publish is returned if not)."""
    import aio_pika
    from aio_pika.exceptions import PublishError

    connection, channel = await raw_channel(layer.url)
    try:
        exchange = await channel.get_exchange(layer.exchange_name)
        try:
            await exchange.publish(aio_pika.Message(b"probe", expiration=1), group, mandatory=True)
        except PublishError:
            return False
        return True
    finally:
        await connection.close()


async def consumer_count(layer: RabbitMQChannelLayer, channel: str) -> int:
    connection, amqp = await raw_channel(layer.url)
    try:
        queue = await amqp.declare_queue(layer._names.channel(channel), passive=True)
        count: int = queue.declaration_result.consumer_count
        return count
    finally:
        await connection.close()


# ---------------------------------------------------------------- fan-out by the broker


async def test_group_send_is_one_publish_fanned_out_by_bindings(make: Any) -> None:
    processes = [make() for _ in range(3)]
    members = []
    for layer in processes:
        for _ in range(3):
            channel = await layer.new_channel()
            await layer.group_add("room", channel)
            members.append((layer, channel))
    sender: RabbitMQChannelLayer = make()
    publishes = 0
    publish = sender._publisher.publish

    async def counting(*args: Any, **kwargs: Any) -> str:
        nonlocal publishes
        publishes += 1
        return await publish(*args, **kwargs)

    sender._publisher.publish = counting  # type: ignore[method-assign, assignment]
    # a tap queue bound to the group sees each copy the exchange receives
    connection, amqp = await raw_channel()
    try:
        tap = await amqp.declare_queue(exclusive=True)
        await sender._ensure_exchange()
        await tap.bind(sender.exchange_name, "room")
        await sender.group_send("room", {"type": "m", "n": 1})
        for layer, channel in members:
            assert (await asyncio.wait_for(layer.receive(channel), WAIT))["n"] == 1
        assert publishes == 1
        message = await tap.get(timeout=WAIT, fail=False)
        assert message is not None
        assert await tap.get(timeout=WAIT, fail=False) is None  # exactly one copy went through the exchange
    finally:
        await connection.close()


async def test_membership_is_a_binding_per_process(make: Any) -> None:
    layer = make()
    one, two = await layer.new_channel(), await layer.new_channel()
    await layer._ensure_exchange()
    assert not await routable(layer, "g")
    await layer.group_add("g", one)
    await layer.group_add("g", two)
    assert await routable(layer, "g")
    await layer.group_discard("g", one)
    assert await routable(layer, "g")  # a local member is left
    await layer.group_discard("g", two)
    assert not await routable(layer, "g")  # the last one left: the inbox is unbound


async def test_dead_process_membership_ends_with_its_connection(make: Any) -> None:
    member, sender = make(), make()
    channel = await member.new_channel()
    await member.group_add("g", channel)
    assert await routable(sender, "g")
    await member.close()  # its exclusive inbox, and so its binding, goes with the connection
    assert not await routable(sender, "g")
    await sender.group_send("g", {"type": "m"})  # nobody listening is not an error


async def test_own_members_get_group_messages_once(make: Any) -> None:
    layer = make()
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    for n in range(5):
        await layer.group_send("g", {"type": "m", "n": n})
    assert [(await asyncio.wait_for(layer.receive(channel), WAIT))["n"] for _ in range(5)] == list(range(5))
    # the copy routed back to this process's inbox is skipped, not delivered twice
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.5)


# ---------------------------------------------------------------- capacity and expiry on the broker


async def test_full_inbox_of_another_process_is_channel_full(make: Any) -> None:
    receiver, sender = make(inbox_capacity=2), make()
    await receiver._inbox.ensure()  # an inbox whose process does not consume (a hung process)
    channel = f"specific.{receiver.process_id}!stuck"
    await sender.send(channel, {"type": "m", "n": 0})
    await sender.send(channel, {"type": "m", "n": 1})
    with pytest.raises(ChannelFull, match="stuck"):
        await sender.send(channel, {"type": "m", "n": 2})
    # a group send to the full inbox drops for that member instead of raising
    await receiver._group_join("g")
    before = sender.dropped
    await sender.group_send("g", {"type": "m"})
    assert sender.dropped == before + 1


async def test_send_to_dead_process_is_dropped_not_an_error(make: Any) -> None:
    sender = make()
    await sender.send("specific.0123456789abcdef!gone", {"type": "m"})
    assert sender.dropped == 1


async def test_named_member_expires_on_the_broker_after_its_process_died(make: Any) -> None:
    adder, sender, reader = make(group_expiry=1), make(group_expiry=1), make(group_expiry=1)
    await adder.group_add("g", "test.worker")
    await adder.close()  # nobody is left who could remove it: the broker must
    await sender.group_send("g", {"type": "m", "n": 1})
    assert (await asyncio.wait_for(reader.receive("test.worker"), WAIT))["n"] == 1
    await asyncio.sleep(1.6)
    assert not await routable(sender, "g")
    await sender.group_send("g", {"type": "m", "n": 2})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.receive("test.worker"), 0.5)


async def test_longest_names_fit_amqp_limits(make: Any) -> None:
    prefix = "p" * 99
    layer = make(prefix=prefix)
    sender = make(prefix=prefix)
    group, named = "g" * 99, "n" * 99
    remote = await layer.new_channel("c" * 40)
    await sender.group_add(group, named)
    await sender.group_add(group, remote)  # another process's channel: its name is read back
    await sender.group_send(group, {"type": "m"})
    assert (await asyncio.wait_for(sender.receive(named), WAIT))["type"] == "m"
    assert (await asyncio.wait_for(layer.receive(remote), WAIT))["type"] == "m"


async def test_re_adding_a_named_member_renews_it(make: Any) -> None:
    layer = make(group_expiry=1.5)
    await layer.group_add("g", "test.renewed")
    for _ in range(3):
        await asyncio.sleep(0.7)
        await layer.group_add("g", "test.renewed")
    assert await routable(layer, "g")  # 2.1 s after the first add, alive thanks to the renewals


async def test_expired_message_is_dropped_by_the_broker(make: Any) -> None:
    layer = make(expiry=0.3)
    await layer.send("test.ttl", {"type": "m"})
    await asyncio.sleep(0.6)
    connection, amqp = await raw_channel()
    try:
        queue = await amqp.declare_queue(layer._names.channel("test.ttl"), passive=True)
        assert await queue.get(timeout=WAIT, fail=False) is None  # gone from RabbitMQ, not just filtered
    finally:
        await connection.close()


async def test_quorum_named_channels(make: Any) -> None:
    layer = make(quorum=True, capacity=3)
    for n in range(3):
        await layer.send("test.quorum", {"type": "m", "n": n})
    with pytest.raises(ChannelFull, match=r"test\.quorum"):
        await layer.send("test.quorum", {"type": "m", "n": 3})
    assert [(await asyncio.wait_for(layer.receive("test.quorum"), WAIT))["n"] for _ in range(3)] == [0, 1, 2]
    connection, amqp = await raw_channel()
    try:  # re-declaring it as a classic queue is refused: it is a quorum queue
        with pytest.raises(Exception, match="PRECONDITION_FAILED"):
            await amqp.declare_queue(layer._names.channel("test.quorum"), durable=True)
    finally:
        await connection.close()


async def test_mismatched_config_is_a_configuration_error(make: Any) -> None:
    first, second = make(capacity=5), make(capacity=6)
    await first.send("test.mismatch", {"type": "m"})
    with pytest.raises(ConfigurationError, match="same CONFIG"):
        await second.send("test.mismatch", {"type": "m"})
    # the layer recovers its publishing channel afterwards
    await second.send("test.other", {"type": "m", "n": 7})
    assert (await asyncio.wait_for(second.receive("test.other"), WAIT))["n"] == 7


# ---------------------------------------------------------------- connections and consumers


async def test_receive_holds_no_consumer_and_reuses_one_connection(make: Any) -> None:
    layer = make()
    for n in range(10):
        await layer.send("test.reuse", {"type": "m", "n": n})
        assert (await asyncio.wait_for(layer.receive("test.reuse"), WAIT))["n"] == n
        assert await consumer_count(layer, "test.reuse") == 0  # consumed only while a receive waits
    connection = layer._connection
    await layer.group_add("g", await layer.new_channel())
    await layer.group_send("g", {"type": "m"})
    assert layer._connection is connection


async def test_a_named_message_goes_to_the_process_that_waits(make: Any) -> None:
    """One process received from a named channel and stopped; another waits: each send reaches the
    waiter at once (it used to sit, prefetched, in the first process until its consumer idled out)."""
    done, waiting = make(), make()
    await done.send("test.jobs", {"type": "m", "n": 0})
    assert (await asyncio.wait_for(done.receive("test.jobs"), WAIT))["n"] == 0
    for n in range(1, 5):
        pending = asyncio.create_task(waiting.receive("test.jobs"))
        await asyncio.sleep(0.2)
        await done.send("test.jobs", {"type": "m", "n": n})
        assert (await asyncio.wait_for(pending, 5))["n"] == n


async def test_message_ttl_holds_for_a_process_that_received_before(make: Any) -> None:
    """A message past its queue's message_ttl is never handed out, even by a process that was
    consuming the channel when it arrived (it used to be prefetched there, out of the broker's reach)."""
    layer = make(message_ttl=300)
    await layer.send("test.ttl-cap", {"type": "m", "n": 0})
    assert (await asyncio.wait_for(layer.receive("test.ttl-cap"), WAIT))["n"] == 0
    await layer.send("test.ttl-cap", {"type": "m", "n": 1})
    await asyncio.sleep(0.8)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive("test.ttl-cap"), 0.5)
    await layer.send("test.ttl-cap", {"type": "m", "n": 2})
    assert (await asyncio.wait_for(layer.receive("test.ttl-cap"), WAIT))["n"] == 2


@pytest.mark.slow
async def test_close_returns_with_its_connection_closed(private_node: PrivateRabbitMQ) -> None:
    """close() wakes a pending receive and returns only once the broker lists no connection of the layer."""
    layer = RabbitMQChannelLayer(url=private_node.url, prefix=f"t{secrets.token_hex(5)}", timeout=5, poll_interval=0.5)
    local = await layer.new_channel()
    assert getattr(layer._connection, "reconnect_interval", None) == 0.5  # poll_interval reaches aio-pika
    await layer.group_add("g", local)
    await layer.send("test.closing", {"type": "m"})
    assert (await asyncio.wait_for(layer.receive("test.closing"), WAIT))["type"] == "m"
    pending = asyncio.create_task(layer.receive("test.closing"))
    await asyncio.sleep(0.2)
    mine = f"{layer.prefix} {layer.process_id}"
    assert mine in await asyncio.to_thread(private_node.connection_names)
    await layer.flush()
    await asyncio.wait_for(layer.close(), WAIT)
    assert mine not in await asyncio.to_thread(private_node.connection_names)
    with pytest.raises(LayerClosed):
        await asyncio.wait_for(pending, WAIT)


async def test_names_derive_from_the_prefix(make: Any) -> None:
    a = make()
    b = make(prefix=f"t{secrets.token_hex(5)}")
    assert a.exchange_name.startswith(a.prefix) and a.queue_prefix == a.prefix
    assert a.exchange_name != b.exchange_name
    await a.send("test.same-name", {"type": "m"})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(b.receive("test.same-name"), 0.5)
    assert (await asyncio.wait_for(a.receive("test.same-name"), WAIT))["type"] == "m"
    await b.flush()


async def test_flush_leaves_nothing_behind(make: Any) -> None:
    layer = make()
    await layer.send("test.left", {"type": "m"})
    await layer.group_add("g", "test.left")
    await layer.group_add("g", await layer.new_channel())
    names = [layer._names.channel("test.left"), layer._names.member("g", "test.left")]
    assert [await exists("queue", name) for name in names] == [True, True]
    assert await exists("exchange", layer.exchange_name)
    await layer.flush()
    assert [await exists("queue", name) for name in names] == [False, False]
    assert not await exists("exchange", layer.exchange_name)
    # and the layer still works afterwards
    await layer.send("test.left", {"type": "m", "n": 2})
    assert (await asyncio.wait_for(layer.receive("test.left"), WAIT))["n"] == 2


async def exists(kind: str, name: str) -> bool:
    from aio_pika.exceptions import ChannelNotFoundEntity

    connection, amqp = await raw_channel()
    try:
        if kind == "queue":
            await amqp.declare_queue(name, passive=True)
        else:
            await amqp.get_exchange(name, ensure=True)
        return True
    except ChannelNotFoundEntity:
        return False
    finally:
        await connection.close()


async def test_layers_recover_when_another_flushes_the_exchange(make: Any) -> None:
    member, flusher = make(), make()
    one = await member.new_channel()
    await member.group_add("a", one)
    await member.group_add("a", "test.named-member")
    await flusher.group_send("a", {"type": "m", "n": 0})
    assert (await asyncio.wait_for(member.receive(one), WAIT))["n"] == 0
    await flusher.flush()  # deletes the exchange under member's feet
    assert not await exists("exchange", member.exchange_name)
    # member's next joins, adds and sends declare it again (and are not refused with a 404)
    two = await member.new_channel()
    await member.group_add("b", two)
    await member.group_add("b", "test.named-member")
    await member.group_send("b", {"type": "m", "n": 1})
    await flusher.group_send("b", {"type": "m", "n": 2})
    assert [(await asyncio.wait_for(member.receive(two), WAIT))["n"] for _ in range(2)] == [1, 2]
    got = [(await asyncio.wait_for(member.receive("test.named-member"), WAIT))["n"] for _ in range(3)]
    assert got == [0, 1, 2]
    # its inbox consumer survived the channel errors: a direct send still arrives, once
    await flusher.send(one, {"type": "m", "n": 3})
    assert (await asyncio.wait_for(member.receive(one), WAIT))["n"] == 3
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(member.receive(two), 0.5)


# ---------------------------------------------------------------- configuration


def test_env_variables_reach_the_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("FASTAPI_WEBSOCKETS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "rabbitmq")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_RABBITMQ_URL", "amqp://u:p@broker:5673/vh")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_RABBITMQ_EXCHANGE_NAME", "ex")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_RABBITMQ_QUEUE_PREFIX", "qp")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_RABBITMQ_DURABLE", "false")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_RABBITMQ_MESSAGE_TTL", "")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_RABBITMQ_QUEUE_EXPIRY", "300000")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_RABBITMQ_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_RABBITMQ_CAPACITY", "7")
    layer = get_channel_layer_from_env()
    assert isinstance(layer, RabbitMQChannelLayer)
    assert (layer.url, layer.exchange_name, layer.queue_prefix) == ("amqp://u:p@broker:5673/vh", "ex", "qp")
    assert (layer.durable, layer.message_ttl, layer.queue_expiry) == (False, None, 300000)
    assert (layer.poll_interval, layer.capacity) == (0.5, 7)
    assert layer._named_arguments() == {"x-max-length": 7, "x-overflow": "reject-publish", "x-expires": 300000}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"quorum": True, "durable": False}, "quorum=True needs durable=True"),
        ({"exchange_name": "bad name!"}, "exchange_name 'bad name!' is not a valid AMQP name"),
        ({"message_ttl": -1}, "message_ttl must be"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_config(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build_layer("rabbitmq", config)


async def test_broker_down_is_broker_unavailable() -> None:
    port = free_port()  # nothing listens there
    layer = RabbitMQChannelLayer(url=f"amqp://guest:guest@127.0.0.1:{port}/", timeout=2)
    try:
        with pytest.raises(BrokerUnavailable, match=f"127.0.0.1:{port}"):
            await asyncio.wait_for(layer.send("test.down", {"type": "m"}), WAIT)
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(layer.new_channel(), WAIT)
    finally:
        await layer.close()


async def test_silent_broker_times_out_instead_of_hanging() -> None:
    """A peer that accepts TCP but never speaks AMQP (a hung broker): calls fail, bounded."""
    writers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda reader, writer: writers.append(writer), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    layer = RabbitMQChannelLayer(url=f"amqp://guest:guest@127.0.0.1:{port}/", timeout=1)
    try:
        for call in (lambda: layer.send("test.hung", {"type": "m"}), lambda: layer.group_send("g", {"type": "m"})):
            with pytest.raises(BrokerUnavailable, match="timed out"):
                await asyncio.wait_for(call(), WAIT)
        assert layer._connection is None  # the failed attempt left no reconnect loop behind
    finally:
        await layer.close()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------- a private node that restarts


@pytest.fixture(scope="module")
def private_node() -> Iterator[PrivateRabbitMQ]:
    if not available():
        message = "rabbitmq-server binaries not installed: cannot run a private node"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    node = PrivateRabbitMQ()
    try:
        node.start()
        yield node
    finally:
        node.cleanup()


async def until_works(what: Any, deadline: float = 60) -> Any:
    """Retry ``what()`` while the layer reconnects (bounded); return its result."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        try:
            return await asyncio.wait_for(what(), WAIT)
        except (TimeoutError, BrokerUnavailable):
            if loop.time() > end:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.slow
async def test_broker_restart_needs_no_application_restart(private_node: PrivateRabbitMQ) -> None:
    prefix = f"t{secrets.token_hex(5)}"
    config: dict[str, Any] = {"url": private_node.url, "prefix": prefix, "timeout": 2, "poll_interval": 0.5}
    app, other = RabbitMQChannelLayer(**config), RabbitMQChannelLayer(**config)
    try:
        local = await app.new_channel()
        await app.group_add("room", local)
        await app.group_add("workers", "test.durable-member")
        for n in range(50):  # each is confirmed when send returns
            await app.send("test.durable", {"type": "m", "n": n})
        assert (await asyncio.wait_for(app.receive("test.durable"), WAIT))["n"] == 0  # a live, prefetching consumer

        for stop in (private_node.stop, private_node.kill):  # a clean shutdown, then a crash
            await asyncio.to_thread(stop)
            # while the broker is down, calls fail in bounded time instead of hanging
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(app.send("test.durable", {"type": "m", "n": -1}), WAIT)
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(other.group_send("room", {"type": "m", "n": -1}), WAIT)
            await asyncio.to_thread(private_node.start)
            # the same layer objects work again: aio-pika re-declared app's inbox and its binding ...
            await until_works(lambda: _bound(app, "room"))
            await until_works(lambda: other.send("test.probe", {"type": "probe"}))
            await other.group_send("room", {"type": "g", "n": 1})
            assert (await asyncio.wait_for(app.receive(local), WAIT))["n"] == 1
            # ... and its inbox consumer: a message from another process reaches a local channel
            await other.send(local, {"type": "p", "n": 2})
            assert (await asyncio.wait_for(app.receive(local), WAIT))["n"] == 2

        # nothing confirmed before the restarts was lost (durable queues, persistent messages),
        # and the prefetched-but-unacked messages of the old consumer were not delivered twice
        got: list[int] = []
        with contextlib.suppress(TimeoutError):  # on a loss, the assertion below shows what is missing
            while len(got) < 49:
                got.append((await asyncio.wait_for(app.receive("test.durable"), WAIT))["n"])
        assert sorted(got) == list(range(1, 50))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(app.receive("test.durable"), 0.5)
        # the named channel's group membership (a durable queue and binding) survived both restarts
        await other.group_send("workers", {"type": "g", "n": 3})
        assert (await asyncio.wait_for(other.receive("test.durable-member"), WAIT))["n"] == 3
    finally:
        for layer in (app, other):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(layer.flush(), WAIT)
            await layer.close()


async def _bound(layer: RabbitMQChannelLayer, group: str) -> None:
    if not await routable(layer, group):
        raise BrokerUnavailable(f"{group!r} has no binding yet")
