"""The Redis layer beyond the conformance suite: Cluster, sharding, Sentinel, restarts, round trips."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.channels import BaseChannelLayer, BrokerUnavailable, ChannelFull, ConfigurationError, LayerClosed
from app.channels._compat import cluster_needs_initialize
from app.channels.config import build_layer, get_channel_layer_from_env

from ..brokers import URLS, installed_backends, require_broker
from . import redis_servers
from . import test_conformance as conformance
from .redis_servers import RedisServer, cli
from .test_batching import assert_concurrent_sends_share_batches

pytestmark = [
    pytest.mark.skipif("redis" not in installed_backends(), reason="redis backend not selected"),
    pytest.mark.timeout(120),
]
ROOT = Path(__file__).resolve().parents[2]
Factory = Callable[..., BaseChannelLayer]


def need_binaries() -> None:
    """Skip without redis-server on a laptop; fail under CI=true, where a skip would hide the backend."""
    if not redis_servers.available():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("redis-server / redis-cli binaries are missing (CI=true: must not skip)")
        pytest.skip("redis-server binaries not installed")


@pytest.fixture(autouse=True)
def _binaries() -> None:
    need_binaries()


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("redis")


@pytest.fixture(scope="module")
def cluster_nodes(tmp_dir: Path) -> Iterator[list[RedisServer]]:
    need_binaries()
    with redis_servers.cluster(tmp_dir / "cluster") as nodes:
        yield nodes


@pytest.fixture(scope="module")
def two_servers(tmp_dir: Path) -> Iterator[list[RedisServer]]:
    need_binaries()
    with redis_servers.servers(tmp_dir / "hosts", 2) as started:
        yield started


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server with an fsync-always AOF: what was acknowledged survives kill -9."""
    private = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always").start()
    try:
        yield private
    finally:
        private.stop()


def _factory(base: dict[str, Any]) -> tuple[Factory, list[BaseChannelLayer]]:
    layers: list[BaseChannelLayer] = []
    prefix = f"t{secrets.token_hex(5)}"

    def make(**overrides: Any) -> BaseChannelLayer:
        layer = build_layer("redis", {"prefix": prefix, **base, **overrides})
        layers.append(layer)
        return layer

    return make, layers


async def _cleanup(layers: list[BaseChannelLayer]) -> None:
    open_layers = [layer for layer in layers if not layer.closed]
    if open_layers:
        await open_layers[0].flush()
    for layer in open_layers:
        await layer.close()


@pytest.fixture
async def make_layer() -> AsyncIterator[Factory]:
    """Layers on the shared Redis."""
    require_broker("redis")
    make, layers = _factory({"url": URLS["redis"]})
    yield make
    await _cleanup(layers)


async def receive(layer: BaseChannelLayer, channel: str, within: float = 10) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), within)


async def wait_until(check: Callable[[], bool], what: str, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- the conformance suite, re-targeted

CONFORMANCE = [getattr(conformance, name) for name in dir(conformance) if name.startswith("test_")]


async def _run_conformance(test: Callable[..., Any], config: dict[str, Any]) -> None:
    make, layers = _factory(config)
    kwargs: dict[str, Any] = {}
    params = inspect.signature(test).parameters
    if "make_layer" in params:
        kwargs["make_layer"] = make
    if "backend" in params:
        kwargs["backend"] = "redis"
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            if "monkeypatch" in params:
                kwargs["monkeypatch"] = monkeypatch
            await test(**kwargs)
    finally:
        await _cleanup(layers)


@pytest.mark.parametrize("test", CONFORMANCE, ids=lambda t: t.__name__)
async def test_conformance_on_cluster(test: Callable[..., Any], cluster_nodes: list[RedisServer]) -> None:
    await _run_conformance(test, {"url": cluster_nodes[0].url, "cluster": True})


@pytest.mark.parametrize("test", CONFORMANCE, ids=lambda t: t.__name__)
async def test_conformance_on_two_sharded_hosts(test: Callable[..., Any], two_servers: list[RedisServer]) -> None:
    await _run_conformance(test, {"hosts": [s.url for s in two_servers]})


async def test_cluster_three_processes(cluster_nodes: list[RedisServer]) -> None:
    """OS processes on the cluster: every member gets every group message exactly once."""
    config = {"url": cluster_nodes[0].url, "cluster": True, "prefix": f"t{secrets.token_hex(5)}"}
    members, messages = 100, 10
    procs = []
    for _ in range(3):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.channels.member_process", "redis", json.dumps(config), "room",
            str(members), str(messages), "40", cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        procs.append(proc)
    sender = build_layer("redis", config)
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        for n in range(messages):
            await sender.group_send("room", {"type": "m", "n": n})
        outputs = [(await asyncio.wait_for(p.communicate(), 60))[0] for p in procs]
        reports = [json.loads(out.decode().splitlines()[-1]) for out in outputs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await sender.flush()
        await sender.close()
    for report in reports:
        assert report["counts"] == {str(n): members for n in range(messages)} and report["extra"] == 0, report


# ---------------------------------------------------------------- sharding over hosts


def _keys(server: RedisServer, prefix: str, db: int = 0) -> list[str]:
    return [k for k in cli(server.port, "-n", str(db), "--scan", "--pattern", "{" + prefix + ":*").split("\n") if k]


async def test_hosts_spread_channels_and_groups_cross_them(two_servers: list[RedisServer]) -> None:
    make, layers = _factory({"hosts": [s.url for s in two_servers]})
    try:
        sender = make()
        prefix = sender.prefix
        channels = [f"test.spread{n}" for n in range(40)]
        for n, channel in enumerate(channels):
            await sender.send(channel, {"type": "m", "n": n})
        named_keys = [[k for k in _keys(s, prefix) if ":c:" in k] for s in two_servers]
        assert all(named_keys), named_keys  # both servers hold some of the channels
        assert sum(map(len, named_keys)) == len(channels)
        assert [(await receive(sender, c))["n"] for c in channels] == list(range(40))
        # receivers until both servers host an inbox (each process's inbox hashes to one host)
        receivers: dict[int, BaseChannelLayer] = {}
        for _ in range(40):
            layer = make()
            receivers.setdefault(_inbox_host(layer), layer)
            if len(receivers) == 2:
                break
        assert len(receivers) == 2
        groups = [f"room:{n}" for n in range(10)]
        mine = {}
        for layer in receivers.values():
            mine[layer] = await layer.new_channel()
            for group in groups:
                await layer.group_add(group, mine[layer])
        group_keys = [[k for k in _keys(s, prefix) if ":g:" in k] for s in two_servers]
        assert all(group_keys), group_keys  # the groups are spread over both servers too
        for n, group in enumerate(groups):
            await sender.group_send(group, {"type": "g", "n": n})
        for layer, channel in mine.items():
            assert sorted([(await receive(layer, channel))["n"] for _ in groups]) == list(range(10))
    finally:
        await _cleanup(layers)


def _inbox_host(layer: BaseChannelLayer) -> int:
    from app.channels.backends.redis.connections import ring, tag
    from app.channels.backends.redis.layer import RedisChannelLayer

    assert isinstance(layer, RedisChannelLayer)
    return ring(tag(layer._inbox_key), len(layer._redis.clients))


# ---------------------------------------------------------------- restarts


async def test_restart_needs_no_application_restart(server: RedisServer) -> None:
    make, layers = _factory({"url": server.url})
    try:
        receiver, sender = make(), make()
        channel = await receiver.new_channel()
        await receiver.group_add("room", channel)
        await sender.send(channel, {"type": "m", "n": 0})
        assert (await receive(receiver, channel))["n"] == 0
        await sender.send("test.kept", {"type": "m", "n": 100})  # acknowledged before the crash
        waiting = asyncio.create_task(receiver.receive(channel))
        await asyncio.sleep(0.3)
        server.kill()
        with pytest.raises(BrokerUnavailable, match="unavailable"):
            await sender.send(channel, {"type": "m", "n": -1})
        with pytest.raises(BrokerUnavailable):
            await sender.group_send("room", {"type": "m", "n": -2})
        with pytest.raises(BrokerUnavailable):
            await sender.send("test.named", {"type": "m", "n": -3})
        named = asyncio.create_task(receiver.receive("test.named"))
        await asyncio.sleep(0.5)
        assert not waiting.done() and not named.done()
        server.start()
        await sender.send(channel, {"type": "m", "n": 1})
        assert (await asyncio.wait_for(waiting, 15))["n"] == 1
        await sender.send("test.named", {"type": "m", "n": 2})
        assert (await asyncio.wait_for(named, 15))["n"] == 2
        assert (await receive(receiver, "test.kept"))["n"] == 100
        await sender.group_send("room", {"type": "m", "n": 3})
        assert (await receive(receiver, channel))["n"] == 3
        # nothing acknowledged arrives twice, nothing refused arrives at all
        for name in (channel, "test.named", "test.kept"):
            await conformance.assert_nothing(receiver, name, 0.5)
    finally:
        if server.process is None:
            server.start()
        await _cleanup(layers)


async def test_memberships_come_back_after_a_restart_without_persistence(tmp_path: Path) -> None:
    """An empty Redis after the restart: the inbox consumer re-registers this process's groups."""
    private = RedisServer(tmp_path, "--appendonly", "no").start()
    make, layers = _factory({"url": private.url})
    try:
        receiver, sender = make(), make()
        channel = await receiver.new_channel()
        await receiver.group_add("room", channel)
        private.kill()
        await asyncio.sleep(0.5)
        private.start()
        key = "{" + receiver.prefix + ":g:room}p"
        await wait_until(lambda: cli(private.port, "zscore", key, receiver.process_id).strip() != "", "re-join")
        await sender.group_send("room", {"type": "m", "n": 1})
        assert (await receive(receiver, channel))["n"] == 1
    finally:
        await _cleanup(layers)
        private.stop()


# ---------------------------------------------------------------- round trips and connections


def _monitor(port: int, path: Path) -> subprocess.Popen[bytes]:
    out = path.open("wb")
    proc = subprocess.Popen([redis_servers.REDIS_CLI, "-p", str(port), "monitor"], stdout=out)
    out.close()
    return proc


def _client_addresses(port: int, name: str) -> set[str]:
    lines = cli(port, "client", "list").splitlines()
    return {f.split("=", 1)[1] for line in lines if f"name={name} " in line + " "
            for f in line.split() if f.startswith("addr=")}


async def test_group_send_and_send_are_one_round_trip(tmp_path: Path) -> None:
    private = RedisServer(tmp_path).start()
    make, layers = _factory({"url": private.url})
    try:
        sender = make()
        receivers = [make() for _ in range(3)]
        channels = [await r.new_channel() for r in receivers]
        for r, c in zip(receivers, channels, strict=True):
            await r.group_add("room", c)
        await sender.group_add("room", "worker.named")
        await sender.group_send("room", {"type": "warm-up"})
        await sender.send("worker.named", {"type": "warm-up"})
        addresses = _client_addresses(private.port, f"{sender.prefix}:{sender.process_id}")
        assert addresses
        monitor = _monitor(private.port, tmp_path / "monitor.log")
        try:
            await asyncio.sleep(0.5)
            cli(private.port, "echo", "start-mark")
            await sender.group_send("room", {"type": "m"})
            await sender.send("worker.named", {"type": "m"})
            cli(private.port, "echo", "end-mark")
            await asyncio.sleep(0.5)
        finally:
            monitor.terminate()
            monitor.wait(5)
        lines = (tmp_path / "monitor.log").read_text(errors="replace").splitlines()
        start = next(i for i, line in enumerate(lines) if "start-mark" in line)
        end = next(i for i, line in enumerate(lines) if "end-mark" in line)
        window = lines[start + 1 : end]
        mine = [line.split("]", 1)[1].split()[0] for line in window if any(f" {a}]" in line for a in addresses)]
        assert mine == ['"EVALSHA"', '"EVALSHA"'], window  # group_send: 1, send: 1
        inside = [line for line in window if "[0 lua]" in line and '"RPUSH"' in line]
        assert len(inside) == 3 + 1 + 1  # three inboxes and the named member, then the send
        for r, c in zip(receivers, channels, strict=True):
            assert [(await receive(r, c))["type"] for _ in range(2)] == ["warm-up", "m"]
    finally:
        await _cleanup(layers)
        private.stop()


async def test_concurrent_sends_share_pipelines_and_fail_alone(make_layer: Factory) -> None:
    """Sends made while a pipeline is in flight go together in the next; a full channel fails only its sends."""
    sender, receiver = make_layer(capacity=20), make_layer()
    await assert_concurrent_sends_share_batches(sender, receiver, sender._pipeline, "test.pipefull")  # type: ignore[attr-defined]


def test_only_adjacent_sends_to_one_list_merge() -> None:
    from app.channels.backends.redis.scripts import GROUP_SEND, SEND, SEND_MANY, merge_sends, split_results

    def send(key: str, payload: bytes) -> Any:
        return (SEND, [key], [b"0000000000001" + payload, 10, 5000, 1])

    calls = [send("a", b"1"), send("a", b"2"), send("b", b"3"), (GROUP_SEND, ["g", "h"], []), send("a", b"4")]
    merged, spans = merge_sends(calls)
    assert [(script, keys) for script, keys, _ in merged] == [
        (SEND_MANY, ["a"]), (SEND, ["b"]), (GROUP_SEND, ["g", "h"]), (SEND, ["a"])]
    assert merged[0][2] == [10, 5000, 1, b"00000000000011", b"00000000000012"] and spans == [2, 1, 1, 1]
    assert split_results([1, 1, 7, 0], spans) == [1, 0, 1, 7, 0]


async def test_connections_are_bounded(make_layer: Factory) -> None:
    layer, sender = make_layer(max_connections=4), make_layer()
    local = [await layer.new_channel() for _ in range(300)]
    for n, channel in enumerate(local):
        await layer.group_add(f"room:{n % 50}", channel)
    named = [f"test.bounded{n}" for n in range(12)]
    receivers = [asyncio.create_task(layer.receive(c)) for c in named]
    await asyncio.gather(*(sender.send(c, {"type": "m", "c": c}) for c in named))
    await asyncio.gather(*(sender.group_send(f"room:{n}", {"type": "g", "n": n}) for n in range(50)))
    got = await asyncio.wait_for(asyncio.gather(*receivers), 30)
    assert [m["c"] for m in got] == named
    assert [(await receive(layer, c))["n"] for c in local] == [n % 50 for n in range(len(local))]
    name = f"{layer.prefix}:{layer.process_id}"
    assert 1 <= len(_client_addresses(6379, name)) <= 4 + 1  # the pool, plus the inbox connection


async def _busy_then_closed(layer: BaseChannelLayer) -> None:
    """Use every kind of connection (pool, inbox, a pop blocked on a named channel), then close."""
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "m"})
    assert (await receive(layer, channel))["type"] == "m"
    blocked = asyncio.create_task(layer.receive("test.nobody-sends"))
    await asyncio.sleep(0.3)
    await layer.close()
    with pytest.raises(LayerClosed):
        await blocked


async def test_close_closes_every_connection(make_layer: Factory) -> None:
    layer = make_layer()
    name = layer.client_name  # type: ignore[attr-defined]
    assert name == f"{layer.prefix}:{layer.process_id}"
    await layer.send("test.warm", {"type": "m"})
    assert _client_addresses(6379, name)  # the count below looks at the right names
    await _busy_then_closed(layer)
    assert _client_addresses(6379, name) == set()


async def test_close_closes_every_connection_of_sharded_hosts_and_cluster(
    two_servers: list[RedisServer], cluster_nodes: list[RedisServer]
) -> None:
    for config, servers in (({"hosts": [s.url for s in two_servers]}, two_servers),
                            ({"url": cluster_nodes[0].url, "cluster": True}, cluster_nodes)):
        make, layers = _factory(config)
        layer = make()
        name = layer.client_name  # type: ignore[attr-defined]
        try:
            await _busy_then_closed(layer)
        finally:
            await _cleanup(layers)
        assert [_client_addresses(s.port, name) for s in servers] == [set()] * len(servers), config


async def _a_left_receive_gives_back(make: Factory) -> None:
    quitter, sender, other = make(), make(), make()
    read = asyncio.create_task(quitter._receive("test.left"))  # type: ignore[attr-defined]  # the broker read
    await asyncio.sleep(0.3)  # blocked in its BLPOP
    read.cancel()
    await sender.send("test.left", {"type": "m", "n": 1})  # the pop still running takes it, then gives it back
    await sender.send("test.left", {"type": "m", "n": 2})
    assert [(await receive(other, "test.left"))["n"] for _ in range(2)] == [1, 2]
    await quitter.close()  # nothing left over to wait for
    assert quitter._leftovers == set()  # type: ignore[attr-defined]


async def test_a_receive_that_left_holds_no_message(make_layer: Factory) -> None:
    """A cancelled named read never keeps what its pop took: it goes back, in order, for any process."""
    await _a_left_receive_gives_back(make_layer)


async def test_a_receive_that_left_holds_no_message_on_cluster(cluster_nodes: list[RedisServer]) -> None:
    make, layers = _factory({"url": cluster_nodes[0].url, "cluster": True})
    try:
        await _a_left_receive_gives_back(make)
    finally:
        await _cleanup(layers)


async def test_a_receive_cancelled_while_the_cluster_loads_takes_nothing(cluster_nodes: list[RedisServer]) -> None:
    """A fresh layer's first receive, cancelled at every point of the slot-map load, starts no pop.

    Python 3.11's ``wait_for`` in redis-py's sends swallowed such a cancel now and then: the read
    went on into a buffer nobody read, and took the next message sent to the channel.
    """
    make, layers = _factory({"url": cluster_nodes[0].url, "cluster": True})
    try:
        sender = make()
        await sender.send("test.first", {"type": "m", "n": -1})  # the sender's own slot map loaded
        assert (await receive(sender, "test.first"))["n"] == -1
        for steps in range(1000):
            layer = make()
            first = asyncio.ensure_future(layer.receive("test.first"))
            for _ in range(steps):
                await asyncio.sleep(0)
            loading = cluster_needs_initialize(layer._redis.cluster)  # type: ignore[attr-defined]
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            await sender.send("test.first", {"type": "m", "n": steps})
            try:
                assert (await receive(layer, "test.first", within=5))["n"] == steps
            except TimeoutError:
                pytest.fail(f"message {steps} lost: a receive cancelled {steps} turns into the load read on")
            await layer.close()
            if not loading:  # the cancels covered the whole load
                break
        assert steps > 3, "the slot map loaded before any cancel could land in it"
    finally:
        await _cleanup(layers)


# ---------------------------------------------------------------- capacity, expiry


async def test_inbox_capacity_raises_channel_full(make_layer: Factory) -> None:
    sender = make_layer(inbox_capacity=3)
    absent = "specific.0123456789abcdef!nobody"  # a process that never reads its inbox
    for n in range(3):
        await sender.send(absent, {"type": "m", "n": n})
    with pytest.raises(ChannelFull, match="nobody"):
        await sender.send(absent, {"type": "m", "n": 3})


async def test_expired_messages_do_not_count_against_capacity(make_layer: Factory) -> None:
    layer = make_layer(capacity=2, expiry=1)
    await layer.send("test.stale", {"type": "m", "n": 0})
    await layer.send("test.stale", {"type": "m", "n": 1})
    with pytest.raises(ChannelFull):
        await layer.send("test.stale", {"type": "m", "n": 2})
    await asyncio.sleep(1.2)  # both expired; the list itself lives a second longer
    await layer.send("test.stale", {"type": "m", "n": 3})
    assert (await receive(layer, "test.stale"))["n"] == 3


# ---------------------------------------------------------------- configuration


async def test_env_variables_reach_the_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"BACKEND": "redis", "REDIS_URL": "redis://127.0.0.1:6399/2", "REDIS_PREFIX": "envp",
                       "REDIS_CLUSTER": "false", "REDIS_CHANNEL_EXPIRY": "30", "REDIS_GROUP_EXPIRY": "120",
                       "REDIS_USE_PUBSUB": "false", "REDIS_SHARDED_PUBSUB": "true", "REDIS_CAPACITY": "7"}.items():
        monkeypatch.setenv(f"FASTAPI_WEBSOCKETS_{key}", value)
    layer = get_channel_layer_from_env()
    try:
        assert (layer.prefix, layer.expiry, layer.group_expiry, layer.capacity) == ("envp", 30.0, 120.0, 7)
        # the seed's Pub/Sub switches are accepted and have no effect: nothing keeps them
        assert not hasattr(layer, "use_pubsub") and not hasattr(layer, "sharded_pubsub")
        assert "6399" in layer._where  # type: ignore[attr-defined]
        with pytest.raises(BrokerUnavailable, match="6399"):
            await layer.send("test.nowhere", {"type": "m"})
    finally:
        await layer.close()


async def test_channels_redis_style_config(make_layer: Factory) -> None:
    layer = make_layer(url=None, hosts=[URLS["redis"]], channel_expiry=5, symmetric_encryption_keys=["k1"])
    assert layer.expiry == 5
    await layer.send("test.crypt", {"type": "m", "b": b"\x00"})
    assert (await receive(layer, "test.crypt"))["b"] == b"\x00"
    host, port = URLS["redis"].split("//")[1].split("/")[0].split(":")
    for hosts in ([{"address": URLS["redis"]}], [(host, int(port))], [{"host": host, "port": int(port)}]):
        other = make_layer(url=None, hosts=hosts, symmetric_encryption_keys=["k1"])
        await other.send("test.hostforms", {"type": "m", "hosts": repr(hosts)})
        assert (await receive(layer, "test.hostforms"))["hosts"] == repr(hosts)
    for bad in ({"hosts": ["redis://a"], "cluster": True}, {"master_name": "m"}, {"sentinels": ["127.0.0.1:1"]}):
        with pytest.raises(ConfigurationError):
            build_layer("redis", bad)


async def test_errors_name_the_server_but_not_its_password() -> None:
    layer = build_layer("redis", {"url": "redis://:hunter2@127.0.0.1:1/0", "prefix": "nopass"})
    try:
        with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1") as caught:
            await layer.group_send("room", {"type": "m"})
        assert "hunter2" not in str(caught.value)
    finally:
        await layer.close()


def test_missing_client_names_the_extra() -> None:
    code = ("import sys; sys.modules['redis'] = None; sys.modules['redis.asyncio'] = None\n"
            "from app.channels.config import build_layer\n"
            "try:\n    build_layer('redis', {})\nexcept Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("BackendNotInstalled") and "[redis]" in out, out


# ---------------------------------------------------------------- sentinel


async def test_sentinel(tmp_path: Path) -> None:
    master = RedisServer(tmp_path).start()
    sentinel = RedisServer(tmp_path, f"sentinel monitor mymaster 127.0.0.1 {master.port} 1",
                           "sentinel down-after-milliseconds mymaster 5000", sentinel=True)
    # the url only gives the master's db: its address comes from the sentinel
    make, layers = _factory({"sentinels": [f"127.0.0.1:{sentinel.port}"], "master_name": "mymaster",
                             "url": "redis://127.0.0.1:1/3"})
    try:
        sentinel.start()
        first, second = make(), make()
        channel = await first.new_channel()
        await first.group_add("room", channel)
        await second.send(channel, {"type": "m", "n": 1})
        await second.group_send("room", {"type": "m", "n": 2})
        await second.send("test.sentinel", {"type": "m", "n": 3})
        assert [(await receive(first, channel))["n"] for _ in range(2)] == [1, 2]
        assert (await receive(first, "test.sentinel"))["n"] == 3
        assert _keys(master, first.prefix, db=3)  # the data went to the master the sentinel named
        assert not _keys(master, first.prefix, db=0)
        name = first.client_name  # type: ignore[attr-defined]
        assert _client_addresses(master.port, name)
        await _cleanup(layers)
        assert (_client_addresses(master.port, name), _client_addresses(sentinel.port, name)) == (set(), set())
    finally:
        await _cleanup(layers)
        sentinel.stop()
        master.stop()
