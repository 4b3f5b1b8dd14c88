"""Workers that boot while the broker is down serve their health checks, report 503 on /readyz, and
join once the broker is back: a deploy during an outage does not stop gunicorn's master."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ..brokers import distributed_backends
from ..chat.client import clients_on_distinct_workers
from ..live_server import BROKER_ENV, live_server, service_env
from .brokerfaults import private_broker

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", [b for b in ("redis", "nats") if b in distributed_backends()])
async def test_workers_boot_during_an_outage_and_join_when_the_broker_returns(
    backend: str, prefix: str, tmp_path: Path
) -> None:
    with private_broker(backend, tmp_path) as broker:
        broker.kill()
        address = broker.config.get("url") or ",".join(broker.config["servers"])
        env = service_env(backend, prefix, **{BROKER_ENV[backend]: address})
        with live_server(env, workers=2, tmp_path=tmp_path, ready="/healthz") as server:
            assert server.process.poll() is None and len(server.worker_pids()) == 2
            status, body = server.get("/readyz")
            assert status == 503 and body["status"] == "unavailable"
            broker.start()
            deadline = time.monotonic() + 60
            while server.get("/readyz")[0] != 200:
                assert time.monotonic() < deadline, "no worker came back after the broker did"
                await asyncio.sleep(0.5)
            alice, bob = await clients_on_distinct_workers(server.ws_url, [server.login("alice"),
                                                                           server.login("bob")], within=60)
            await alice.join("lobby")
            await bob.join("lobby")
            async with asyncio.timeout(30):  # presence joined in the background: the workers see each other
                while True:
                    await alice.send(type="who", room="lobby")
                    if set((await alice.expect("members"))["members"]) == {"alice", "bob"}:
                        break
                    await asyncio.sleep(0.5)
            await bob.send(type="message", room="lobby", text="back in business")
            assert (await alice.expect("message"))["text"] == "back in business"
            assert "Worker failed to boot" not in server.logs()
