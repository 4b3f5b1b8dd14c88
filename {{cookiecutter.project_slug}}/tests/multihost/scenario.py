"""What a client host sees of three app hosts: run inside the client namespace by test_multihost.py.

``python -m tests.multihost.scenario '<json>'`` prints one JSON line of findings. It cuts links
itself (``ip -n <switch> link set <port> down``): the switch namespace is a file under /run/netns,
reachable from any namespace, so the partition lands between two of the script's own steps.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

from ..chat.client import ChatClient, Frame

PASSWORD = "multihost-" + uuid.uuid4().hex
STARTED = time.monotonic()


def step(what: str) -> None:
    """Progress on stderr, so a failure shows how far the scenario got."""
    print(f"[{time.monotonic() - STARTED:6.1f}s] {what}", file=sys.stderr, flush=True)


def account(http_url: str, username: str) -> str:
    """Sign up ``username`` (or log in if an earlier step did) and return its token."""
    for path, expected in (("/api/signup", 201), ("/api/login", 200)):
        body = json.dumps({"username": username, "password": PASSWORD}).encode()
        request = urllib.request.Request(http_url + path, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status == expected:
                    return str(json.loads(response.read())["token"])
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # taken: log in instead
                raise
    raise AssertionError(f"no token for {username}")


class ScenarioClient(ChatClient):
    """Fails at the first error frame: the scenario sends none that should get one, and a frame the server
    refused (``rate_limited`` drops it) would otherwise show only as an answer that never comes."""

    async def next_frame(self) -> Frame | bytes:
        frame = await super().next_frame()
        if isinstance(frame, dict) and frame.get("type") == "error":
            raise AssertionError(f"{self.welcome.get('user')} on {self.worker} got an error frame: {frame}")
        return frame


async def connect(host: str, token: str) -> ChatClient:
    # a dead link shows as missing pongs: ping every second, give up after ten (a busy 2-core host is slow)
    return await ScenarioClient.connect(f"ws://{host}:8000/ws", token, ping_interval=1, ping_timeout=10)


def link(switch: str, port: str, state: str) -> None:
    subprocess.run(["ip", "-n", switch, "link", "set", port, state], check=True, timeout=10)


async def room_messages(client: ChatClient, count: int, timeout: float) -> list[Frame]:
    """The next ``count`` room messages ``client`` receives (other frames are skipped)."""
    got: list[Frame] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got.append(await client.expect("message"))
    return got


async def until_members(client: ChatClient, room: str, wanted: set[str], timeout: float) -> float:
    """Seconds until ``client`` hears that ``room`` holds exactly ``wanted``."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            await client.send(type="who", room=room)
            frame = await client.expect("members", lambda f: f["room"] == room)
            if set(frame["members"]) == wanted:
                return time.monotonic() - started
            await asyncio.sleep(0.3)


async def cross_host_traffic(clients: dict[str, ChatClient], per_sender: int) -> dict[str, Any]:
    """Every user posts ``per_sender`` messages; each must reach every user once and in order."""
    names = sorted(clients)
    started = time.monotonic()
    sent_at: dict[str, float] = {}
    for n in range(per_sender):
        for name in names:
            text = f"{name}-{n}"
            sent_at[text] = time.time()
            await clients[name].send(type="message", room="lobby", text=text)
    latencies: list[float] = []
    for receiver in names:
        got = await room_messages(clients[receiver], per_sender * len(names), timeout=60)
        for sender in names:  # each sender's messages once each, in the order sent
            texts = [f["text"] for f in got if f["from"] == sender]
            assert texts == [f"{sender}-{n}" for n in range(per_sender)], (receiver, sender, texts)
        latencies += [time.time() - sent_at[f["text"]] for f in got]  # upper bounds: read in turn
    elapsed = time.monotonic() - started
    latencies.sort()
    return {"deliveries": len(latencies), "deliveries_per_s": round(len(latencies) / elapsed, 1),
            "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1)}


async def main(config: dict[str, Any]) -> dict[str, Any]:
    hosts: list[str] = config["app_hosts"]
    users = {"alice": hosts[0], "bob": hosts[1], "carol": hosts[2]}
    tokens = {user: account(f"http://{host}:8000", user) for user, host in users.items()}
    step("signed up")
    clients = {user: await connect(host, tokens[user]) for user, host in users.items()}
    for client in clients.values():
        await client.join("lobby")
    step("joined lobby on three hosts")
    findings: dict[str, Any] = {"presence_s": round(await until_members(clients["alice"], "lobby", set(users), 30), 2)}
    step("presence agrees")
    findings["traffic"] = await cross_host_traffic(clients, config["per_sender"])

    step("traffic crossed hosts")
    await clients["alice"].send(type="direct", to="carol", text="just for carol")
    dm = await clients["carol"].expect("direct", lambda f: f["from"] == "alice", timeout=15)
    findings["direct"] = dm["text"]
    # app host 3 drops off the network: carol's socket dies, her presence lapses, she comes back on
    # another host and recovers, with `since`, exactly what she missed (and a direct message, with sync)
    last_seq = max(f["seq"] for f in clients["carol"].seen if isinstance(f, dict) and f.get("type") == "message")
    step("direct message arrived; cutting app host 3")
    link(config["switch"], config["app3_port"], "down")
    cut_at = time.monotonic()
    try:
        missed = [f"while carol was away {n}" for n in range(10)]
        for text in missed:
            await clients["alice"].send(type="message", room="lobby", text=text)
        await clients["bob"].send(type="direct", to="carol", text="for when you are back")
        findings["carol_gone_s"] = round(await until_members(clients["alice"], "lobby", {"alice", "bob"}, 60), 2)
        step("presence dropped carol")
        carol = await connect(hosts[0], tokens["carol"])
        joined = await carol.join("lobby", since=last_seq)
        recovered = [m["text"] for m in joined["history"]]
        findings["recovered"] = joined.get("recovered") is True and recovered == missed
        assert recovered == missed, recovered
        await carol.send(type="sync", dm_since=dm["seq"])
        directs = await carol.expect("directs")
        findings["recovered_direct"] = [m["text"] for m in directs["messages"]] == ["for when you are back"]
        step("carol recovered on app host 1")
        findings["carol_back_s"] = round(await until_members(clients["bob"], "lobby", set(users), 30), 2)
        findings["partition_recovery_s"] = round(time.monotonic() - cut_at, 2)
        await clients["bob"].send(type="message", room="lobby", text="welcome back")
        findings["after_partition"] = (await carol.expect("message", lambda f: f["text"] == "welcome back"))["text"]
    finally:
        link(config["switch"], config["app3_port"], "up")

    if config.get("broker_port"):  # one node of a clustered broker drops off: delivery goes on
        step("cutting broker host 3")
        link(config["switch"], config["broker_port"], "down")
        try:
            findings["broker_failover_s"] = await delivery_resumes(clients["alice"], clients["bob"], 60)
        finally:
            link(config["switch"], config["broker_port"], "up")
    return findings


async def delivery_resumes(sender: ChatClient, receiver: ChatClient, within: float) -> float:
    """Seconds until a message sent now reaches ``receiver`` (sends one every 0.5 s until one does)."""
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < within:
        text = f"probe-{n}"
        await sender.send(type="message", room="lobby", text=text)
        try:
            await receiver.expect("message", lambda f, text=text: f["text"] == text, timeout=0.5)  # type: ignore[misc]
            return round(time.monotonic() - started, 2)
        except TimeoutError:
            n += 1
    raise AssertionError(f"no delivery within {within}s of a broker node's partition")


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
