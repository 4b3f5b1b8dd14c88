"""Bodies over the server's ``max_payload``: uploaded in chunks once, the message carries a pointer.

The chunks go to ``<P>.b.<id>`` in the blob stream; the channel or inbox gets an empty message with
header ``Fws-Blob: <id> <shared> <seq,seq,...>``. A point-to-point body is purged once read, a group's
(``shared``, read by every member process) expires with the stream's ``max_age``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from .connection import NATSConnection
from .publish import Publisher
from .subjects import Subjects

if TYPE_CHECKING:
    from nats.aio.msg import Msg

logger = logging.getLogger("app.channels.nats")

BLOB_HEADER = "Fws-Blob"
HEADROOM = 8 * 1024  # room for headers below max_payload
_SEEN = 50_000  # recent Nats-Msg-Ids remembered to drop redeliveries


class Blobs:
    """``pointer()`` before a publish, ``open()`` after a delivery."""

    def __init__(self, conn: NATSConnection, publisher: Publisher, subjects: Subjects, stream: str,
                 on_drop: Callable[[], None]) -> None:
        self.conn = conn
        self.publisher = publisher
        self.subjects = subjects
        self.stream = stream
        self._on_drop = on_drop
        self._seen: OrderedDict[str, None] = OrderedDict()

    def limit(self) -> int:
        """The largest body published as it is."""
        return max(self.conn.client.max_payload - HEADROOM, 1024)

    async def pointer(self, payload: bytes, *, shared: bool) -> tuple[bytes, dict[str, str]]:
        """The payload itself, or for a large one an empty payload and the pointer to its uploaded chunks."""
        await self.conn.connect()
        limit = self.limit()
        if len(payload) <= limit:
            return payload, {}
        blob = secrets.token_hex(12)
        subject = self.subjects.blob(blob)
        seqs = await asyncio.gather(*(
            self.publisher.publish(subject, payload[i : i + limit]) for i in range(0, len(payload), limit)
        ))
        return b"", {BLOB_HEADER: f"{blob} {int(shared)} {','.join(map(str, seqs))}"}

    async def open(self, msg: Msg) -> bytes | None:
        """The payload of a delivered message: None for a redelivery or a vanished large body."""
        headers = msg.headers
        if not headers:
            return bytes(msg.data)
        msg_id = headers.get("Nats-Msg-Id")
        if msg_id is not None:
            if msg_id in self._seen:
                return None
            self._seen[msg_id] = None
            if len(self._seen) > _SEEN:
                self._seen.popitem(last=False)
        pointer = headers.get(BLOB_HEADER)
        return bytes(msg.data) if pointer is None else await self._download(pointer)

    async def _download(self, pointer: str) -> bytes | None:
        blob, shared, seqs = pointer.split(" ")
        subject = self.subjects.blob(blob)
        parts: list[bytes] = []
        for seq in map(int, seqs.split(",")):
            for attempt in range(20):  # a replica may lag the leader that acked the chunk
                msg = await self.conn.client.request(f"$JS.API.DIRECT.GET.{self.stream}",
                                                     json.dumps({"seq": seq}).encode(), timeout=self.conn.timeout)
                status = msg.headers.get("Status") if msg.headers else None
                if status is None and msg.headers and msg.headers.get("Nats-Subject") == subject:
                    parts.append(bytes(msg.data))
                    break
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                logger.warning("large message body %s expired or vanished; dropping it", blob)
                self._on_drop()
                return None
        if shared == "0":
            with contextlib.suppress(Exception):
                await self.conn.request_json(f"$JS.API.STREAM.PURGE.{self.stream}", {"filter": subject})
        return b"".join(parts)
