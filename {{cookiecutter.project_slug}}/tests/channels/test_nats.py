"""NATS backend specifics: config, race-free membership, watch, leases, large bodies, restarts, a cluster.

Shared-server tests use the broker of tests/brokers.py with a fresh prefix; fault tests start private
nats-server processes (tests/channels/nats_servers.py) and never touch the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.channels import BrokerUnavailable, ChannelFull, ConfigurationError, LayerClosed
from app.channels.config import build_layer, get_channel_layer_from_env

from ..brokers import URLS, installed_backends, require_broker
from .nats_servers import NatsServer, cluster, require_nats_server, stop_all

pytestmark = pytest.mark.skipif("nats" not in installed_backends(), reason="the nats backend is not installed")

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20


def nats_layer(prefix: str, servers: list[str] | None = None, **config: Any) -> Any:
    return build_layer("nats", {"prefix": prefix, "servers": servers or URLS["nats"].split(","), **config})


def count_publishes(layer: Any) -> list[str]:
    """Record the subject of every JetStream publish the layer makes (the real publish still runs)."""
    subjects: list[str] = []
    publish = layer._publisher.publish

    async def counted(subject: str, *args: Any, **kwargs: Any) -> int:
        subjects.append(subject)
        return int(await publish(subject, *args, **kwargs))

    layer._publisher.publish = counted
    return subjects


async def receive(layer: Any, channel: str) -> dict[str, Any]:
    return dict(await asyncio.wait_for(layer.receive(channel), TIMEOUT))


async def wait_jetstream(urls: list[str], within: float = 30) -> None:
    """Wait until JetStream answers (a fresh cluster elects its meta leader first)."""
    import nats

    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            nc = await nats.connect(servers=urls, connect_timeout=1, allow_reconnect=False)
            try:
                reply = await nc.request("$JS.API.INFO", b"", timeout=1)
                if "error" not in json.loads(reply.data):
                    return
            finally:
                await nc.close()
        except Exception:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"JetStream at {urls} not ready within {within}s")
        await asyncio.sleep(0.3)


@pytest.fixture
def shared_nats() -> None:
    require_broker("nats")


@pytest.fixture
def prefix() -> str:
    return f"tn{secrets.token_hex(5)}"


@pytest.fixture
def server_root(tmp_path: Path) -> Path:
    require_nats_server()
    return tmp_path


@pytest.fixture
def private_servers() -> Iterator[list[NatsServer]]:
    """Every private server a test starts; all are killed afterwards, whatever happened."""
    servers: list[NatsServer] = []
    yield servers
    stop_all(servers)


@pytest.fixture
async def layers() -> AsyncIterator[list[Any]]:
    """Layers a test makes; the first open one flushes, then all close (bounded)."""
    made: list[Any] = []
    yield made
    open_layers = [layer for layer in made if not layer.closed]
    if open_layers:
        with contextlib.suppress(Exception):  # a private server may be gone; its temp dir goes with it
            await asyncio.wait_for(open_layers[0].flush(), 15)
    for layer in open_layers:
        await asyncio.wait_for(layer.close(), 15)


# ---------------------------------------------------------------------------------------- config


def test_env_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "FASTAPI_WEBSOCKETS_BACKEND": "nats",
        "FASTAPI_WEBSOCKETS_NATS_SERVERS": "nats://10.0.0.1:4222, nats://10.0.0.2:4222",
        "FASTAPI_WEBSOCKETS_NATS_PREFIX": "myapp",
        "FASTAPI_WEBSOCKETS_NATS_MESSAGE_TIMEOUT": "3.5",
        "FASTAPI_WEBSOCKETS_NATS_CAPACITY": "7",
        "FASTAPI_WEBSOCKETS_NATS_GROUP_BUCKET": "my_groups",
    }.items():
        monkeypatch.setenv(key, value)
    layer: Any = get_channel_layer_from_env()
    assert type(layer).__name__ == "NATSChannelLayer"
    assert layer.servers == ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
    assert (layer.prefix, layer.capacity, layer.message_timeout) == ("myapp", 7, 3.5)
    assert (layer.stream_name, layer.group_bucket) == ("MYAPP", "my_groups")
    assert layer._conn.nc is None  # nothing connects before the first operation


def test_default_names_follow_the_prefix() -> None:
    default: Any = nats_layer("fastapi-websockets")
    assert (default.stream_name, default.group_bucket) == ("FASTAPI_WEBSOCKETS", "fastapi_websockets_groups")
    dotted: Any = nats_layer("a.b")
    coloned: Any = nats_layer("a:b")
    assert dotted.stream_name != coloned.stream_name and dotted.group_bucket != coloned.group_bucket
    with pytest.raises(ConfigurationError, match="stream_name"):
        nats_layer("x", stream_name="bad.name")
    with pytest.raises(ConfigurationError, match="servers"):
        build_layer("nats", {"servers": " , "})


async def test_stream_mismatch_is_reported(shared_nats: None, prefix: str, layers: list[Any]) -> None:
    first = nats_layer(prefix, capacity=5)
    layers.append(first)
    await first.send("job.queue", {"type": "m"})
    second = nats_layer(prefix, capacity=6)
    layers.append(second)
    with pytest.raises(ConfigurationError, match=r"max_msgs_per_subject=5 \(wanted 6\)"):
        await second.send("job.queue", {"type": "m"})


async def test_layers_starting_at_once_all_start(shared_nats: None, prefix: str, layers: list[Any]) -> None:
    """Workers starting together race to create the same streams (NATS answers some of them "subjects
    overlap"): none of them may fail."""
    for _ in range(40):
        starting = [nats_layer(prefix) for _ in range(6)]
        layers += starting
        await asyncio.gather(*(layer._conn.connect() for layer in starting))
        await asyncio.gather(*(layer._streams.ensure() for layer in starting))
        await starting[0].flush()  # deletes the streams, so the next round creates them again


async def test_subjects_owned_by_another_stream_are_reported(shared_nats: None, prefix: str, layers: list[Any]) -> None:
    layer = nats_layer(prefix)
    layers.append(layer)
    js = await layer._conn.connect()
    await js.add_stream(name=f"{layer.stream_name}_SQUATTER", subjects=[f"{layer._subjects.root}.in.*"])
    try:
        with pytest.raises(ConfigurationError, match="subjects overlap"):
            await layer.send("job.queue", {"type": "m"})
    finally:
        await js.delete_stream(f"{layer.stream_name}_SQUATTER")


async def test_inbox_capacity_raises_channel_full(shared_nats: None, prefix: str, layers: list[Any]) -> None:
    receiver, sender = nats_layer(prefix, inbox_capacity=2), nats_layer(prefix, inbox_capacity=2)
    layers += [receiver, sender]
    channel = await receiver.new_channel()
    receiver._inbox_task.cancel()  # the inbox is not being read: its entries pile up on the broker
    for n in range(2):
        await sender.send(channel, {"type": "m", "n": n})
    with pytest.raises(ChannelFull, match="is full"):
        await sender.send(channel, {"type": "m", "n": 2})


# ---------------------------------------------------------------------------------------- groups


async def test_concurrent_adds_and_one_publish_per_process(shared_nats: None, prefix: str, layers: list[Any]) -> None:
    """Six processes add 40 local and 2 named members each, all at once: no add fails, and one
    group_send publishes once per member process and once per named member, never per local member."""
    processes = [nats_layer(prefix) for _ in range(6)]
    layers += processes
    locals_ = [[await p.new_channel() for _ in range(40)] for p in processes]
    named = [[f"worker.{i}.{k}" for k in range(2)] for i in range(len(processes))]
    await asyncio.gather(*(
        p.group_add("room", c) for p, chans, names in zip(processes, locals_, named, strict=True)
        for c in [*chans, *names]
    ))
    sender = nats_layer(prefix)
    layers.append(sender)
    published = count_publishes(sender)
    await sender.group_send("room", {"type": "chat", "n": 1})
    assert sorted(s.split(".")[1] for s in published) == ["c"] * 12 + ["in"] * 6
    for process, chans, names in zip(processes, locals_, named, strict=True):
        for channel in [*chans, *names]:
            assert (await receive(process, channel))["n"] == 1
    for process, chans in zip(processes, locals_, strict=True):
        for channel in chans[:3]:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(process.receive(channel), 0.2)


async def test_watch_follows_remote_changes(shared_nats: None, prefix: str, layers: list[Any]) -> None:
    member, sender = nats_layer(prefix), nats_layer(prefix)
    layers += [member, sender]
    await sender.group_send("room", {"type": "warmup"})  # the sender's view is now live, not re-read
    channel = await member.new_channel()
    await member.group_add("room", channel)
    for _ in range(100):
        if sender._procs.alive("room"):
            break
        await asyncio.sleep(0.05)
    assert sender._procs.alive("room") == [member.process_id]
    await sender.group_send("room", {"type": "m", "n": 1})
    assert (await receive(member, channel))["n"] == 1
    await member.group_discard("room", channel)
    for _ in range(100):
        if not sender._procs.alive("room"):
            break
        await asyncio.sleep(0.05)
    assert sender._procs.alive("room") == []


async def test_dead_process_lease_expires(shared_nats: None, prefix: str, layers: list[Any]) -> None:
    """A member process killed with SIGKILL stops being published to once its lease (3 s) lapses."""
    config = {"prefix": prefix, "servers": URLS["nats"].split(","), "group_expiry": 3}
    script = (
        "import asyncio, json, sys\n"
        "from app.channels.config import build_layer\n"
        "async def main():\n"
        f"    layer = build_layer('nats', json.loads({json.dumps(json.dumps(config))}))\n"
        "    await layer.group_add('room', await layer.new_channel())\n"
        "    print(layer.process_id, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        assert child.stdout is not None
        process_id = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
        sender: Any = build_layer("nats", config)
        layers.append(sender)
        published = count_publishes(sender)
        await sender.group_send("room", {"type": "m"})
        assert published == [f"{sender._subjects.root}.in.{process_id}"]
        child.kill()
        await asyncio.wait_for(child.wait(), 10)
        await asyncio.sleep(3.5)
        published.clear()
        await sender.group_send("room", {"type": "m"})
        assert published == []
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


# ---------------------------------------------------------------------------------------- private servers


async def test_large_messages_are_chunked(server_root: Path, private_servers: list[NatsServer],
                                          layers: list[Any]) -> None:
    """With max_payload 64 KiB a 1 MiB message travels in ~19 chunks: named, to a process, to a group."""
    server = NatsServer(server_root, "small", max_payload=64 * 1024)
    private_servers.append(server)
    server.start()
    await wait_jetstream([server.url])
    one, two, three = (nats_layer("big", [server.url]) for _ in range(3))
    layers += [one, two, three]
    blob = bytes(range(256)) * 4096
    await one.send("big.named", {"type": "m", "body": blob})
    assert (await receive(two, "big.named"))["body"] == blob
    channel = await two.new_channel()
    await one.send(channel, {"type": "m", "body": blob})
    assert (await receive(two, channel))["body"] == blob
    js = one._conn.js
    assert (await js.stream_info(one._blob_stream)).state.messages == 0  # read point-to-point bodies are purged
    members = [await two.new_channel(), await three.new_channel()]
    await two.group_add("g", members[0])
    await three.group_add("g", members[1])
    published = count_publishes(one)
    await one.group_send("g", {"type": "m", "body": blob})
    assert (await receive(two, members[0]))["body"] == blob
    assert (await receive(three, members[1]))["body"] == blob
    chunks = [s for s in published if ".b." in s]
    limit = one._conn.client.max_payload - 8 * 1024
    assert len(set(chunks)) == 1 and len(blob) // limit <= len(chunks) <= len(blob) // limit + 1  # uploaded once
    assert len(published) == len(chunks) + 2  # plus one pointer per member process


async def test_close_returns_with_every_connection_closed(server_root: Path, private_servers: list[NatsServer],
                                                          layers: list[Any]) -> None:
    """close() wakes a pending receive and returns only once the server has no connection of the layer."""
    server = NatsServer(server_root, "watched", monitor=True)
    private_servers.append(server)
    server.start()
    await wait_jetstream([server.url])
    layer = nats_layer("closing", [server.url])
    layers.append(layer)
    local = await layer.new_channel()
    await layer.group_add("room", local)
    await layer.send("closing.work", {"n": 1})
    assert (await receive(layer, "closing.work"))["n"] == 1
    pending = asyncio.create_task(layer.receive("closing.work"))
    mine = [name for name in server.connection_names() if layer.process_id in name]
    assert len(mine) == 1
    await asyncio.wait_for(layer.close(), TIMEOUT)
    with pytest.raises(LayerClosed):
        await asyncio.wait_for(pending, TIMEOUT)
    # the client has closed its socket; the server's monitoring view follows within moments (bounded)
    for _ in range(50):
        if not [name for name in server.connection_names() if layer.process_id in name]:
            break
        await asyncio.sleep(0.1)
    assert [name for name in server.connection_names() if layer.process_id in name] == []


async def test_a_received_message_frees_its_slot_in_a_cluster(server_root: Path, private_servers: list[NatsServer],
                                                              layers: list[Any]) -> None:
    """With R3 streams an ack reaches the stream after a later publish may: the receive removes the
    message from the stream itself, so the slot is free when receive() returns."""
    nodes = cluster(server_root)
    private_servers.extend(nodes)
    for node in nodes:
        node.start()
    urls = [node.url for node in nodes]
    await wait_jetstream(urls, 45)
    layer = nats_layer("slots", urls, replicas=3, capacity=5, message_timeout=20)
    layers.append(layer)
    for n in range(5):
        await layer.send("slots.work", {"n": n})
    with pytest.raises(ChannelFull):
        await layer.send("slots.work", {"n": -1})
    for n in range(5, 35):
        assert (await receive(layer, "slots.work"))["n"] == n - 5
        await layer.send("slots.work", {"n": n})  # never ChannelFull: the received one's slot is free


async def test_a_named_message_goes_to_the_process_that_waits(shared_nats: None, prefix: str,
                                                              layers: list[Any]) -> None:
    """One process received from a named channel and stopped; another waits: each send reaches the waiter."""
    done, waiting = nats_layer(prefix), nats_layer(prefix)
    layers += [done, waiting]
    await done.send("jobs.queue", {"n": 0})
    assert (await receive(done, "jobs.queue"))["n"] == 0
    for n in range(1, 5):
        pending = asyncio.create_task(waiting.receive("jobs.queue"))
        await asyncio.sleep(0.2)
        await done.send("jobs.queue", {"n": n})
        assert (await asyncio.wait_for(pending, 5))["n"] == n


async def test_restart_loses_nothing_acknowledged(server_root: Path, private_servers: list[NatsServer],
                                                  layers: list[Any]) -> None:
    server = NatsServer(server_root, "solo")
    private_servers.append(server)
    server.start()
    await wait_jetstream([server.url])
    receiver = nats_layer("restart", [server.url], message_timeout=2)
    sender = nats_layer("restart", [server.url], message_timeout=2)
    layers += [receiver, sender]
    member = await receiver.new_channel()
    await receiver.group_add("room", member)
    for n in range(20):
        await sender.send("work.queue", {"type": "m", "n": n})
    for n in range(5):
        await sender.group_send("room", {"type": "g", "n": n})
    assert [(await receive(receiver, member))["n"] for _ in range(2)] == [0, 1]

    server.kill()
    with pytest.raises(BrokerUnavailable, match=r"within 2\.0s"):
        await sender.send("work.queue", {"type": "m", "n": -1})
    server.start()
    await wait_jetstream([server.url])

    # Same layers, no restart of the application: everything acknowledged before the kill arrives.
    assert [(await receive(receiver, "work.queue"))["n"] for _ in range(20)] == list(range(20))
    assert [(await receive(receiver, member))["n"] for _ in range(3)] == [2, 3, 4]
    await sender.group_send("room", {"type": "g", "n": 5})  # membership survived in the KV bucket
    assert (await receive(receiver, member))["n"] == 5
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(receiver.receive(member), 0.5)


async def test_cluster_node_killed_mid_run(server_root: Path, private_servers: list[NatsServer],
                                           layers: list[Any]) -> None:
    """Three routed JetStream servers, R3 streams; a node dies while messages flow: every group and
    named message sent is received exactly once."""
    nodes = cluster(server_root)
    private_servers.extend(nodes)
    for node in nodes:
        node.start()
    urls = [node.url for node in nodes]
    await wait_jetstream(urls, 45)
    config = {"replicas": 3, "message_timeout": 30, "capacity": 1000}
    receivers = [nats_layer("clu", urls, **config) for _ in range(2)]
    sender = nats_layer("clu", urls, **config)
    layers += [*receivers, sender]
    members = [(r, await r.new_channel()) for r in receivers for _ in range(3)]
    for layer, channel in members:
        await layer.group_add("room", channel)
    total = 120
    got: dict[str, list[int]] = {channel: [] for _, channel in members}
    named: list[int] = []

    async def drain(layer: Any, channel: str, into: list[int]) -> None:
        while len(into) < total:
            into.append((await layer.receive(channel))["n"])

    drains = [asyncio.create_task(drain(layer, channel, got[channel])) for layer, channel in members]
    drains.append(asyncio.create_task(drain(receivers[0], "clu.work", named)))
    try:
        for n in range(total):
            if n == total // 3:
                nodes[0].kill()
            await sender.group_send("room", {"type": "g", "n": n})
            await sender.send("clu.work", {"type": "w", "n": n})
        await asyncio.wait_for(asyncio.gather(*drains), 90)
    finally:
        for task in drains:
            task.cancel()
    for channel, numbers in got.items():
        assert Counter(numbers) == Counter(range(total)), channel
    assert Counter(named) == Counter(range(total))
    for layer, channel in members[:2]:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.5)
