"""A numbered stream through a broker fault, per distributed backend, on a private broker instance.

A sender sends ``n = 0, 1, 2 ...`` both to a group (the chat's path: a process inbox) and to a named
channel while the broker is killed with SIGKILL and restarted, or frozen with SIGSTOP for longer than
the clients' timeouts and then thawed. The same layer objects are used throughout: no application
restart. Asserted: receive() resumes, everything acknowledged after recovery arrives, and what each
backend promises (``PROMISES``: nothing acknowledged lost, nothing delivered twice). Measured
and printed (``RESULT`` lines; appended as JSON to ``$RELIABILITY_REPORT`` if set): messages
acknowledged, lost (acknowledged, never received), duplicated, "ghosts" (the send raised, the message
arrived anyway) and how long after the fault ended the first message got through.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.channels import BaseChannelLayer
from app.channels.config import build_layer

from ..brokers import distributed_backends
from .brokerfaults import PrivateBroker, private_broker
from .report import report

pytestmark = pytest.mark.slow

PAUSE_SECONDS = float(os.environ.get("RELIABILITY_PAUSE_SECONDS", "12"))  # > socket/heartbeat timeouts (10 s)
#: (backend, path) -> what is promised of acknowledged messages through a fault: "durable" (none lost)
#: and/or "once" (none duplicated). RabbitMQ inboxes are transient exclusive queues (documented in the
#: backend), PostgreSQL and RabbitMQ named channels are at-least-once across a crash.
PROMISES: dict[tuple[str, str], set[str]] = {
    ("redis", "group"): {"durable", "once"}, ("redis", "named"): {"durable", "once"},
    ("postgresql", "group"): {"durable"}, ("postgresql", "named"): {"durable"},
    ("nats", "group"): {"durable", "once"}, ("nats", "named"): {"durable", "once"},
    ("rabbitmq", "group"): set(), ("rabbitmq", "named"): {"durable"},
}
#: PostgreSQL commits sends and reads asynchronously (see its backend): a crash may lose or repeat what
#: was committed in the last WAL-writer interval (~0.2 s), so it is held durable only through a pause.
CRASH_MAY_LOSE = {"postgresql"}
BEFORE, AFTER = 40, 40  # messages sent before the fault and after it ended
INTERVAL = 0.05
OP_BOUND = 30.0  # no single send may hang longer than this (it counts as refused)
REDELIVERY_BOUND = 45.0  # how long an acknowledged message may take to arrive before it counts as lost


@dataclass
class Stream:
    acked: dict[int, float] = field(default_factory=dict)  # n -> when the send returned
    refused: set[int] = field(default_factory=set)
    received: Counter[int] = field(default_factory=Counter)
    first_seen: dict[int, float] = field(default_factory=dict)

    def record(self, n: int) -> None:
        self.received[n] += 1
        self.first_seen.setdefault(n, time.monotonic())

    def summary(self, fault_end: float, during: range) -> dict[str, Any]:
        after = [at for n, at in self.first_seen.items() if at >= fault_end]
        return {
            "during_fault": [during.start, during.stop - 1],
            "lost_n": sorted(set(self.acked) - set(self.received))[:10],
            "duplicated_n": sorted(n for n, count in self.received.items() if count > 1)[:10],
            "ghost_n": sorted(self.refused & set(self.received))[:10],
            "slowest_s": round(max((self.first_seen[n] - at for n, at in self.acked.items() if n in self.first_seen),
                                   default=0.0), 2),
            "sent": len(self.acked) + len(self.refused), "acked": len(self.acked), "refused": len(self.refused),
            "lost": len(set(self.acked) - set(self.received)),
            "duplicated": sum(count - 1 for count in self.received.values() if count > 1),
            "ghosts": len(self.refused & set(self.received)),
            "recovered_in_s": round(min(after) - fault_end, 2) if after else None,
        }


async def _send_stream(send: Callable[[int], Awaitable[None]], stream: Stream, start: int, count: int) -> int:
    n = start
    for n in range(start, start + count):
        try:
            async with asyncio.timeout(OP_BOUND):
                await send(n)
        except Exception:  # BrokerUnavailable, timeouts, ChannelFull: the sender was told it failed
            stream.refused.add(n)
        else:
            stream.acked[n] = time.monotonic()
        await asyncio.sleep(INTERVAL)
    return n + 1


async def _receive_into(layer: BaseChannelLayer, channel: str, stream: Stream) -> None:
    while True:
        message = await layer.receive(channel)
        stream.record(int(message["n"]))


async def _wait_for(stream: Stream, numbers: list[int], bound: float = 90) -> None:
    deadline = time.monotonic() + bound
    while any(n not in stream.received for n in numbers) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)


async def _fault(broker: PrivateBroker, kind: str) -> None:
    if kind == "kill":
        await asyncio.to_thread(broker.kill)
        await asyncio.sleep(1)
        await asyncio.to_thread(broker.start)
    else:
        broker.pause()
        try:
            await asyncio.sleep(PAUSE_SECONDS)
        finally:
            broker.resume()


@pytest.mark.parametrize("fault", ["kill", "pause"])
@pytest.mark.parametrize("backend", distributed_backends())
async def test_numbered_stream_through_a_fault(backend: str, fault: str, tmp_path: Path) -> None:
    with private_broker(backend, tmp_path) as broker:
        config = {**broker.config, "prefix": f"rel{secrets.token_hex(4)}", "expiry": 300}
        receiver, sender = build_layer(backend, config), build_layer(backend, config)
        group, named = Stream(), Stream()
        tasks: list[asyncio.Task[Any]] = []
        try:
            channel = await receiver.new_channel()
            await receiver.group_add("room", channel)
            tasks += [asyncio.create_task(_receive_into(receiver, channel, group)),
                      asyncio.create_task(_receive_into(receiver, "rel.named", named))]

            async def send(n: int) -> None:  # _send_stream records the named send; the group one is recorded here
                try:
                    await sender.group_send("room", {"type": "m", "n": n})
                except Exception:
                    group.refused.add(n)
                else:
                    group.acked[n] = time.monotonic()
                await sender.send("rel.named", {"type": "m", "n": n})

            n = await _send_stream(send, named, 0, BEFORE)
            first_during = n
            fault_task = asyncio.create_task(_fault(broker, fault))
            while not fault_task.done():  # keep sending through the fault
                n = await _send_stream(send, named, n, 1)
            await fault_task
            fault_end, during = time.monotonic(), range(first_during, n)
            n = await _send_stream(send, named, n, AFTER)
            tail = list(range(n - 10, n))
            # a message in flight at the fault may come back only after an ack timeout (NATS: ack_wait 30 s)
            await _wait_for(group, list(group.acked), REDELIVERY_BOUND)
            await _wait_for(named, list(named.acked), REDELIVERY_BOUND)
            await asyncio.sleep(1)  # late duplicates
            for path, stream in (("group", group), ("named", named)):
                row = {"backend": backend, "fault": fault, "path": path, **stream.summary(fault_end, during)}
                report("RESULT", row)
            for stream in (group, named):
                resumed = [m for m in tail if m in stream.acked]
                assert resumed, "no send succeeded after the fault: the layer did not recover"
                assert all(m in stream.received for m in resumed), "receive() did not resume"
            assert not receiver.closed and not sender.closed
            for path, stream in (("group", group), ("named", named)):
                row = stream.summary(fault_end, during)
                promised = PROMISES[(backend, path)]
                if "durable" in promised and not (fault == "kill" and backend in CRASH_MAY_LOSE):
                    assert not row["lost"], f"{path}: acknowledged messages lost: {row['lost_n']}"
                if "once" in promised:
                    assert not row["duplicated"], f"{path}: delivered twice: {row['duplicated_n']}"
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for layer in (receiver, sender):
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(20):
                        await layer.close()
