"""Celery jobs against real brokers: a real prefork worker, a 2-worker gunicorn service, WebSocket clients."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.worker.settings import default_celery_urls

from ..brokers import URLS, distributed_backends, require_broker
from ..chat.client import ChatClient, clients_on_distinct_workers
from ..live_server import BROKER_ENV, live_server
from .conftest import Stack, http, run_stack, stack_env
from .processes import TcpProxy, celery_beat

pytestmark = pytest.mark.slow


async def expect_none(clients: list[ChatClient], kind: str, seconds: float = 1.5) -> None:
    """No client receives another frame of ``kind`` within ``seconds``."""

    async def quiet(client: ChatClient) -> None:
        with pytest.raises(TimeoutError):
            frame = await client.expect(kind, timeout=seconds)
            raise AssertionError(f"unexpected second {kind}: {frame}")

    await asyncio.gather(*(quiet(client) for client in clients))


async def test_announcement_reaches_clients_on_two_workers(stack: Stack) -> None:
    token = stack.server.login("ops")
    alice, bob = await clients_on_distinct_workers(stack.server.ws_url, [stack.server.login("alice"),
                                                                           stack.server.login("bob")])
    assert alice.worker != bob.worker
    for client in (alice, bob):
        await client.join("lobby")
    assert stack.call("POST", "/api/jobs/announce", None, {"room": "lobby", "text": "x"})[0] == 401
    member = stack.server.login("mallory")  # signed in, not an admin
    assert stack.call("POST", "/api/jobs/announce", member, {"room": "lobby", "text": "x"})[0] == 403
    assert stack.call("POST", "/api/jobs/notify", member, {"users": ["bob"], "text": "x"})[0] == 403
    status, job = stack.call("POST", "/api/jobs/announce", token, {"room": "lobby", "text": "maintenance at 22:00"})
    assert status == 202, job
    for client in (alice, bob):
        frame = await client.expect("announcement", lambda f: f["id"] == job["id"], timeout=20)
        assert (frame["room"], frame["text"], frame["from"]) == ("lobby", "maintenance at 22:00", "ops")
    done = await asyncio.to_thread(stack.wait_job, token, job["id"])
    assert done["result"] == {"id": job["id"], "room": "lobby", "sent": 1}
    await expect_none([alice, bob], "announcement")
    assert stack.call("GET", f"/api/jobs/{job['id']}", None)[0] == 401
    assert stack.call("GET", f"/api/jobs/{job['id']}", stack.server.login("ops2"))[0] == 404  # another admin's
    for client in (alice, bob):
        await client.close()


async def test_broadcast_reaches_every_room_once(stack: Stack) -> None:
    token = stack.server.login("ops")
    clients = await clients_on_distinct_workers(stack.server.ws_url, [stack.server.login("carol"),
                                                                      stack.server.login("dan")])
    for client, room in zip(clients, ("red", "blue"), strict=True):
        await client.join(room)
    await asyncio.sleep(1.5)  # presence reaches both web workers (APP_PRESENCE_INTERVAL_SECONDS=1)
    status, job = stack.call("POST", "/api/jobs/broadcast", token, {"text": "to everyone"})
    assert status == 202, job
    for client, room in zip(clients, ("red", "blue"), strict=True):
        frame = await client.expect("announcement", lambda f: f["text"] == "to everyone", timeout=20)
        assert (frame["id"], frame["room"]) == (job["id"], room)
    done = await asyncio.to_thread(stack.wait_job, token, job["id"])
    assert done["result"]["rooms"] >= 2
    await expect_none(clients, "announcement")
    for client in clients:
        await client.close()


async def test_chunked_notify_reaches_each_user_exactly_once(stack: Stack) -> None:
    users = [f"user{i:02d}" for i in range(30)]
    tokens = [stack.server.login(u) for u in users]
    clients = await clients_on_distinct_workers(stack.server.ws_url, tokens[:2])  # both web workers serve users
    clients += await asyncio.gather(*(ChatClient.connect(stack.server.ws_url, token) for token in tokens[2:]))
    token = stack.server.login("ops")
    status, job = stack.call("POST", "/api/jobs/notify", token, {"users": users, "text": "new release"})
    assert status == 202, job
    frames = await asyncio.gather(*(c.expect("direct", lambda f: f["id"] == job["id"], timeout=30) for c in clients))
    assert [(f["to"], f["from"], f["text"]) for f in frames] == [(u, "ops", "new release") for u in users]
    done = await asyncio.to_thread(stack.wait_job, token, job["id"])
    assert done["result"] == {"id": job["id"], "users": 30, "chunks": 5}
    await expect_none(clients, "direct")
    stack.worker.wait_for(rf"notify_chunk\[{job['id']}-\d\] succeeded", times=5)
    assert stack.worker.count(r"layer bridge ready") == 2  # one layer per pool process, not one per task
    for client in clients:
        await client.close()


@pytest.mark.parametrize("layer", distributed_backends())
async def test_retry_after_broker_blip_does_not_double_send(
    layer: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's layer reaches its broker through a proxy that goes down mid-fan-out, then comes back.

    Celery's own broker (and the dedup markers) stay reachable: only the layer blips.
    """
    require_broker(layer)
    parts = urlsplit(URLS[layer].split(",")[0])
    assert parts.hostname and parts.port
    proxy = TcpProxy((parts.hostname, parts.port))
    proxied = URLS[layer].replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    env = stack_env(layer, prefix, APP_JOBS_SEND_RATE="10", APP_JOBS_MAX_RETRIES="10",
                    APP_JOBS_LAYER_TIMEOUT_SECONDS="2")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    broker, results = default_celery_urls()
    if layer == "rabbitmq":
        results = "rpc://"
    try:
        with run_stack(layer, prefix, tmp_path, env=env, CELERY_BROKER_URL=broker, CELERY_RESULT_BACKEND=results,
                       **{BROKER_ENV[layer]: proxied}) as stack:
            users = [f"u{i:02d}" for i in range(30)]
            clients = await asyncio.gather(*(ChatClient.connect(stack.server.ws_url, stack.server.login(u))
                                             for u in users))
            token = stack.server.login("ops")
            status, job = stack.call("POST", "/api/jobs/notify", token, {"users": users, "text": "blip"})
            assert status == 202, job
            # 5 chunks of 7 at 10 sends/s on 2 processes: cut the layer once 3 users got theirs, so at
            # least one running chunk has sent part of its users (the first ones may race the cut)
            waits = [asyncio.create_task(c.expect("direct", lambda f: f["id"] == job["id"], timeout=90))
                     for c in clients]
            for delivered, first in enumerate(asyncio.as_completed(waits, timeout=60), start=1):
                await first
                if delivered == 3:
                    break
            proxy.down()
            # twice the layer timeout: a send in flight fails even where the client buffers through a
            # reconnect (nats-py), so some chunk must retry
            await asyncio.sleep(4)
            proxy.up()
            frames = await asyncio.gather(*waits)
            assert sorted(f["to"] for f in frames) == users
            await expect_none(clients, "direct", seconds=3)
            assert stack.worker.count(r"notify_chunk\[[^\]]+\] retry") >= 1, stack.worker.logs()[-3000:]
            # retried chunks resumed after their last marked user: 30 sends in all, over every attempt
            stack.worker.wait_for(r"notify_chunk\[[^\]]+\] succeeded", times=5)
            logs = stack.worker.logs()
            final = re.findall(r"notify_chunk\[[^\]]+\] succeeded in [\d.]+s: \{'users': \d+, 'sent': (\d+)\}", logs)
            failed = re.findall(rf"job {job['id']}: (\d+) of \d+ sent before", logs)
            assert sum(map(int, final + failed)) == 30, (final, failed)
            assert any(int(n) > 0 for n in failed), failed  # the blip did cut a chunk after some sends
            for client in clients:
                await client.close()
    finally:
        proxy.close()


async def test_job_that_exhausts_retries_is_logged_and_failed(prefix: str, tmp_path: Path) -> None:
    require_broker("redis")
    proxy = TcpProxy(("127.0.0.1", 9))  # nothing listens upstream: every layer operation fails
    dead = f"redis://127.0.0.1:{proxy.port}/0"
    try:
        with run_stack("redis", prefix, tmp_path, FASTAPI_WEBSOCKETS_REDIS_URL=dead, CELERY_BROKER_URL=URLS["redis"],
                       CELERY_RESULT_BACKEND=URLS["redis"], APP_JOBS_MAX_RETRIES="1") as stack:
            token = stack.server.login("ops")
            status, job = stack.call("POST", "/api/jobs/announce", token, {"room": "void", "text": "lost"})
            assert status == 202
            failed = await asyncio.to_thread(stack.wait_job, token, job["id"], ("FAILURE",), 30)
            assert "BrokerUnavailable" in failed["error"]
            stack.worker.wait_for(r"job failed for good: app\.worker\.tasks\.announce\[" + job["id"])
            assert '"void", "lost"' in stack.worker.logs()
    finally:
        proxy.close()


async def test_beat_posts_room_stats(prefix: str, tmp_path: Path) -> None:
    require_broker("redis")
    env = stack_env("redis", prefix, APP_JOBS_STATS_INTERVAL_SECONDS="1")
    with run_stack("redis", prefix, tmp_path, env=env) as stack:
        erin = await ChatClient.connect(stack.server.ws_url, stack.server.login("erin"))
        await erin.join("stats")
        await asyncio.sleep(1.2)  # the room reaches the other web worker's presence
        with celery_beat(stack.env, tmp_path) as beat:
            frame = await erin.expect("announcement", lambda f: "online here" in f["text"], timeout=30)
            assert frame["text"].startswith("1 online here") and frame["room"] == "stats"
            assert beat.count(r"Scheduler: Sending due task room-stats") >= 1
        await erin.close()
    assert stack.worker.count(r"layer bridge closed") == 2  # worker_process_shutdown closed each layer


async def test_rpc_result_backend_refuses_job_state(prefix: str, tmp_path: Path) -> None:
    """rpc:// (the rabbitmq stack's default) answers only the sender: the API says so instead of PENDING."""
    if "rabbitmq" not in distributed_backends():
        pytest.skip("no rabbitmq backend")
    require_broker("rabbitmq")
    with live_server(stack_env("rabbitmq", prefix), workers=1, tmp_path=tmp_path) as server:
        status, body = http(server, "GET", "/api/jobs/some-id", server.login("ops"))
        assert status == 501 and "CELERY_RESULT_BACKEND" in body["detail"]


async def test_pool_process_killed_mid_chunk_redelivers_without_double_send(prefix: str, tmp_path: Path) -> None:
    """acks_late + reject_on_worker_lost: the killed chunk runs again elsewhere and skips marked users."""
    require_broker("redis")
    env = stack_env("redis", prefix, APP_JOBS_SEND_RATE="10")
    with run_stack("redis", prefix, tmp_path, env=env) as stack:
        users = [f"k{i:02d}" for i in range(30)]
        clients = await asyncio.gather(*(ChatClient.connect(stack.server.ws_url, stack.server.login(u))
                                         for u in users))
        status, job = stack.call("POST", "/api/jobs/notify", stack.server.login("ops"), {"users": users, "text": "k"})
        assert status == 202, job
        waits = [asyncio.create_task(c.expect("direct", lambda f: f["id"] == job["id"], timeout=90)) for c in clients]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED, timeout=60)
        await asyncio.sleep(0.15)
        ps = ["ps", "-o", "pid=", "--ppid", str(stack.worker.process.pid)]
        pool = (await asyncio.to_thread(subprocess.run, ps, capture_output=True, text=True, check=True)).stdout.split()
        os.kill(int(pool[0]), signal.SIGKILL)
        frames = await asyncio.gather(*waits)
        assert sorted(f["to"] for f in frames) == users
        await expect_none(clients, "direct", seconds=3)
        assert stack.worker.count(r"WorkerLostError") >= 1, stack.worker.logs()[-3000:]
        assert stack.worker.count(r"layer bridge ready") == 3  # the replacement process opened its own layer
        for client in clients:
            await client.close()
