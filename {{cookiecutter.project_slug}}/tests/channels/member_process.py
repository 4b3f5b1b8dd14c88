"""A receiving OS process for the multi-process tests and the benchmark.

Run as ``python -m tests.channels.member_process BACKEND CONFIG_JSON GROUP MEMBERS MESSAGES``.
Prints ``ready`` once its members joined, then one JSON line: per-message receive counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter

from app.channels.config import build_layer


async def main(backend: str, config: str, group: str, members: int, messages: int, timeout: float) -> None:
    layer = build_layer(backend, json.loads(config))
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add(group, channel)
    print("ready", flush=True)
    counts: Counter[int] = Counter()

    async def drain(channel: str) -> None:
        for _ in range(messages):
            counts[(await layer.receive(channel))["n"]] += 1

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(drain(c) for c in channels)), timeout)
    # anything beyond the expected count would be a duplicate: look briefly for extras
    extra = 0
    for channel in channels:
        try:
            while True:
                await asyncio.wait_for(layer.receive(channel), 0.01)
                extra += 1
        except TimeoutError:
            pass
    print(json.dumps({"counts": dict(counts), "extra": extra, "dropped": layer.dropped}), flush=True)
    await layer.close()


if __name__ == "__main__":
    backend, config, group, members, messages, timeout = sys.argv[1:7]
    asyncio.run(main(backend, config, group, int(members), int(messages), float(timeout)))
