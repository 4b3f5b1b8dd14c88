"""Two or more OS processes sharing one broker: every member gets every group message exactly once."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from app.channels.config import build_layer

from ..brokers import distributed_backends, layer_config, require_broker

ROOT = Path(__file__).resolve().parents[2]


async def start_members(backend: str, config: dict, group: str, members: int, messages: int) -> list:  # type: ignore[type-arg]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.channels.member_process", backend, json.dumps(config), group,
        str(members), str(messages), "60", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert line.strip() == b"ready", line
    return [process]


@pytest.mark.slow
@pytest.mark.parametrize("backend", distributed_backends())
async def test_four_processes_250_members_each(backend: str, prefix: str) -> None:
    require_broker(backend)
    config = layer_config(backend, prefix)
    processes, members, messages = 4, 250, 20
    started = await asyncio.gather(
        *(start_members(backend, config, "room:big", members, messages) for _ in range(processes))
    )
    sender = build_layer(backend, config)
    try:
        for n in range(messages):
            await sender.group_send("room:big", {"type": "chat.message", "n": n})
        reports = []
        for (process,) in started:
            assert process.stdout is not None
            out, _ = await asyncio.wait_for(process.communicate(), 90)
            reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        await sender.flush()
        await sender.close()
    for report in reports:
        assert report["counts"] == {str(n): members for n in range(messages)}, report
        assert report["extra"] == 0
