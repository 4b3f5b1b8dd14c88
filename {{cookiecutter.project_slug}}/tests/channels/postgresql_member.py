"""A PostgreSQL layer process that joins a group and then waits to be killed (a crashed worker).

Run as ``python -m tests.channels.postgresql_member CONFIG_JSON GROUP MEMBERS``; prints one JSON
line with its ``process_id`` once its members joined.
"""

from __future__ import annotations

import asyncio
import json
import sys

from app.channels.config import build_layer


async def main(config: str, group: str, members: int) -> None:
    layer = build_layer("postgresql", json.loads(config))
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add(group, channel)
    print(json.dumps({"process_id": layer.process_id}), flush=True)
    await asyncio.sleep(60)  # bounded: the test kills this process long before
    await layer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
