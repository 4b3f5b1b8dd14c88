"""The pull protocol, by hand: ``$JS.API.CONSUMER.MSG.NEXT`` requests answered on a private inbox.

nats-py's ``pull_subscribe().fetch()`` costs a request, a task and a timer per batch and cannot keep
a request outstanding while the previous batch is handled; ``pull_forever`` keeps one outstanding,
renews it before it expires and notices a consumer that is gone by its missing heartbeats.
Named channels pull one message per receive, and only while a receive waits.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..._compat import nats_has_queued, nats_take_queued
from ...exceptions import ChannelLayerError
from .blobs import Blobs
from .connection import NATSConnection
from .streams import Restart, Streams
from .subjects import Subjects, consumer_name

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

HEARTBEAT = 1.0  # idle heartbeat of outstanding pull requests
PULL_EXPIRES = 5.0  # lifetime of one pull request
_NOT_FOUND = 10057  # JetStream: no message with that sequence (expired, or another receiver took it)


def _status(msg: Msg) -> str | None:
    return msg.headers.get("Status") if msg.headers else None


async def pull_forever(conn: NATSConnection, streams: Streams, stream: str, consumer: str,
                       handle: Callable[[Msg], Awaitable[None]], batch: int) -> None:
    """Keep a pull request outstanding on ``consumer`` and hand every message to ``handle``.

    Raises ``Restart`` when heartbeats stop (consumer deleted, connection lost) or on flush.
    """
    generation = streams.generation
    nc = conn.client
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, pending_msgs_limit=4 * batch, pending_bytes_limit=256 * 1024 * 1024)
    subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
    request = json.dumps({"batch": batch, "expires": int(PULL_EXPIRES * 1e9),
                          "idle_heartbeat": int(HEARTBEAT * 1e9)}).encode()
    owed, renew_at, heard = 0, 0.0, time.monotonic()
    try:
        while True:
            streams.check(generation)
            now = time.monotonic()
            if owed <= batch // 2 or now >= renew_at:
                await nc.publish(subject, request, reply=inbox)
                owed, renew_at = owed + batch, now + PULL_EXPIRES - 1.0
            try:
                msg = nats_take_queued(sub)
                if msg is None:
                    msg = await sub.next_msg(timeout=0.5)
            except conn.lib.errors.TimeoutError:
                if time.monotonic() - heard > 3 * HEARTBEAT:
                    raise Restart(f"no heartbeat from consumer {consumer!r} of {stream!r}") from None
                continue
            heard = time.monotonic()
            status = _status(msg)
            if status is None:
                owed -= 1
                await handle(msg)
            elif status in ("404", "408", "409"):
                description = msg.headers.get("Description", "") if msg.headers else ""
                if "Deleted" in description:
                    raise Restart(f"consumer {consumer!r} was deleted")
                pending = msg.headers.get("Nats-Pending-Messages", batch) if msg.headers else batch
                owed = max(owed - int(pending), 0)
            elif status == "503":
                raise Restart(f"no responders for consumer {consumer!r}")
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


class NamedPulls:
    """Named channels: one durable consumer per channel shared by every process, one pull per receive.

    A pull request lives only as long as the receive that sent it (``wait``), so a message goes to a
    process that is waiting for it. A delivered message is *deleted* from the stream (a request the
    server answers once the deletion is applied, in a cluster once it is replicated) before it is
    handed out: its slot is free when ``receive`` returns, and the deletion is the claim that makes a
    redelivery (an ack lost in a reconnect) to another process harmless.
    """

    def __init__(self, conn: NATSConnection, streams: Streams, blobs: Blobs, subjects: Subjects,
                 stream: str) -> None:
        self.conn = conn
        self.streams = streams
        self.blobs = blobs
        self.subjects = subjects
        self.stream = stream
        self._named: dict[str, tuple[str, Subscription]] = {}  # channel -> (consumer, subscription)

    async def receive(self, channel: str, wait: float) -> bytes | None:
        """One message of ``channel`` within ``wait`` seconds, or None."""
        await self.streams.ensure()
        nc, api = self.conn.client, self.conn.lib.api
        state = self._named.get(channel)
        if state is None:
            consumer = consumer_name(channel)
            js = await self.conn.connect()
            await js.add_consumer(self.stream, api.ConsumerConfig(
                durable_name=consumer, filter_subject=self.subjects.named(channel),
                ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30.0, inactive_threshold=3600.0,
            ))
            state = self._named[channel] = (consumer, await nc.subscribe(nc.new_inbox()))
        consumer, sub = state
        if not nats_has_queued(sub):  # nothing left over from an earlier request
            request = {"batch": 1, "expires": int(wait * 1e9)}
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{consumer}",
                             json.dumps(request).encode(), reply=sub.subject)
        deadline = time.monotonic() + wait + 1.0
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=remaining)
            except self.conn.lib.errors.TimeoutError:
                break
            status = _status(msg)
            if status == "100":
                continue
            if status is not None:
                return None  # 404/408: nothing arrived in time; 409: retry on the next call
            if not await self._take(msg):
                return None
            return await self.blobs.open(msg)
        # No answer at all: the consumer or the connection is gone; recreate it next time.
        await self.drop(channel)
        return None

    async def _take(self, msg: Msg) -> bool:
        """Delete ``msg`` from the stream, then ack it; False if it was gone already."""
        seq = msg.metadata.sequence.stream
        try:
            answer = await self.conn.request_json(f"$JS.API.STREAM.MSG.DELETE.{self.stream}",
                                                  {"seq": seq, "no_erase": True}, wait=min(self.conn.timeout, 2.0))
        except BaseException:
            # e.g. a leader election: have it redelivered now rather than after ack_wait (if the deletion
            # did happen, the redelivery finds it gone and is skipped)
            with contextlib.suppress(Exception):
                await self.conn.client.publish(msg.reply, b"-NAK")
            raise
        await self.conn.client.publish(msg.reply, b"")  # the consumer forgets it too
        error = answer.get("error")
        if error is None:
            return True
        if error.get("err_code") == _NOT_FOUND:
            return False
        raise ChannelLayerError(f"NATS refused to remove a received message: {error.get('description')}")

    async def drop(self, channel: str) -> None:
        state = self._named.pop(channel, None)
        if state is not None:
            with contextlib.suppress(Exception):
                await state[1].unsubscribe()

    async def drop_all(self) -> None:
        for channel in list(self._named):
            await self.drop(channel)
