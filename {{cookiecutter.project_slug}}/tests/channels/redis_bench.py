"""Group fan-out benchmark (not a test): PROCESSES x MEMBERS members, MESSAGES group sends.

    python -m tests.channels.redis_bench [PROCESSES MEMBERS MESSAGES [CONFIG_JSON [BACKEND]]]

Prints member deliveries per second: from the first group_send until the last member of the
last process received the last message. Every delivery is counted, so losses show up as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import time
from pathlib import Path

from app.channels.config import build_layer

ROOT = Path(__file__).resolve().parents[2]


async def member(backend: str, config: str, group: str, members: int, messages: int) -> None:
    layer = build_layer(backend, json.loads(config))
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add(group, channel)
    print("ready", flush=True)
    received = 0
    first = last = 0.0

    async def drain(channel: str) -> None:
        nonlocal received, first, last
        for _ in range(messages):
            await layer.receive(channel)
            received += 1
            last = time.time()
            first = first or last

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(drain(c) for c in channels)), 120)
    print(json.dumps({"received": received, "first": first, "last": last, "dropped": layer.dropped}), flush=True)
    await layer.close()


async def main(processes: int, members: int, messages: int, config: dict[str, object], backend: str) -> None:
    config = {"prefix": f"bench{secrets.token_hex(4)}", **config}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.channels.redis_bench", "member", backend, json.dumps(config), "room",
            str(members), str(messages), cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        for _ in range(processes)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 120)).strip() == b"ready"
    sender = build_layer(backend, config)
    try:
        started = time.time()
        for n in range(messages):
            await sender.group_send("room", {"type": "m", "n": n})
        sent = time.time()
        reports = [json.loads((await asyncio.wait_for(p.communicate(), 180))[0].decode().splitlines()[-1])
                   for p in procs]
    finally:
        await sender.flush()
        await sender.close()
    done = max(r["last"] for r in reports)
    total = sum(r["received"] for r in reports)
    print(json.dumps({
        "processes": processes, "members": members, "messages": messages,
        "expected": processes * members * messages, "received": total,
        "group_sends_per_s": round(messages / (sent - started)),
        "deliveries_per_s": round(total / (done - started)), "seconds": round(done - started, 3),
    }))


if __name__ == "__main__":
    if sys.argv[1:2] == ["member"]:
        backend, config, group, members, messages = sys.argv[2:7]
        asyncio.run(member(backend, config, group, int(members), int(messages)))
    else:
        args = sys.argv[1:]
        asyncio.run(main(
            int(args[0]) if args else 4, int(args[1]) if len(args) > 1 else 250, int(args[2]) if len(args) > 2 else 200,
            json.loads(args[3]) if len(args) > 3 else {"url": "redis://127.0.0.1:6379/0"},
            args[4] if len(args) > 4 else "redis",
        ))
