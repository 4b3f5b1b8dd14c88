"""What every backend shares: validation, serialization and process-local channels.

A layer instance is one *process*. Its process-local channels (``prefix.<process>!<token>``)
are asyncio queues in this process, fed by one inbox on the broker. Group membership is kept
on the broker per process, not per channel: a ``group_send`` reaches each process with members
once, and the process hands a copy to each of its local members. Backends implement the
broker primitives (``primitives.py``); the public API lives here once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import msgpack

from . import tracing
from .broker import Backoff, require_positive
from .exceptions import ChannelFull, LayerClosed
from .local import LocalQueue
from .named import NamedChannels
from .names import is_process_local, process_of, validate_channel, validate_group
from .primitives import BrokerPrimitives
from .serialization import Serializer, validate_message
from .tasks import cancel_and_wait

logger = logging.getLogger("app.channels")

DEFAULT_MAX_MESSAGE_SIZE = 2 * 1024 * 1024
#: How long an inbox reader waits for a full local channel to make room before dropping for it.
PARK_WAIT = 5.0
#: A local channel holds ``(expires_at, message)``: expiry holds for what this process already took.
_Entry = tuple[float, dict[str, Any]]
#: Put on an empty local channel by close(): a receive() that gets it raises LayerClosed.
_CLOSED: _Entry = (float("inf"), {})
_CHANNEL_ENTRY = 0
_GROUP_ENTRY = 1


class BaseChannelLayer(BrokerPrimitives):
    """The public channel layer API; subclasses plug in a broker."""

    extensions: ClassVar[list[str]] = ["groups", "flush"]
    #: The backend's inbox reader awaits ``_relieve()`` between batches (see there).
    inbox_backpressure: ClassVar[bool] = False
    #: A named-channel read (``_receive``) can be cancelled without losing or reordering a message
    #: (see named.py): a receive that leaves then stops the read at once.
    named_reads_cancel_safe: ClassVar[bool] = False
    #: Maps the seed's environment variables (``FASTAPI_WEBSOCKETS_<NAME>_*``) to config keys.
    env_model: ClassVar[type[Any] | None] = None

    def __init__(
        self,
        *,
        prefix: str = "fastapi-websockets",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        inbox_capacity: int = 10_000,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        channel_expiry: float | None = None,
        receive_timeout: float = 1.0,
    ) -> None:
        self.prefix = validate_group(prefix)
        self.expiry = float(channel_expiry if channel_expiry is not None else expiry)
        self.group_expiry = float(group_expiry)
        self.capacity = int(capacity)
        self.inbox_capacity = int(inbox_capacity)
        #: How long one broker read of a named channel blocks before it is renewed (every backend).
        self.receive_timeout = float(receive_timeout)
        require_positive(expiry=self.expiry, group_expiry=self.group_expiry, capacity=self.capacity,
                         inbox_capacity=self.inbox_capacity, max_message_size=max_message_size,
                         receive_timeout=self.receive_timeout)
        self.serializer = Serializer(max_message_size, symmetric_encryption_keys)
        #: This process's id: the part of its channel names before ``!``.
        self.process_id = secrets.token_hex(8)
        self._local: dict[str, LocalQueue[_Entry]] = {}
        self._local_groups: dict[str, dict[str, float]] = {}  # group -> {channel: expires_at}
        self._named_receives = NamedChannels(self._receive, self._settle, self.serializer.loads, self._check_open,
                                             self._count_drop, cancel_safe=self.named_reads_cancel_safe)
        self._inbox_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._closed = False
        # Inbox deliveries that found their channel full wait here, in order, for _relieve().
        self._parked: deque[tuple[str, _Entry]] = deque()
        self._parked_channels: Counter[str] = Counter()
        #: Messages dropped because a local channel was full or unknown (for metrics).
        self.dropped = 0

    # ------------------------------------------------------------------ public API

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send ``message`` to ``channel``; raises ``ChannelFull`` when it holds ``capacity`` messages."""
        self._check_open()
        local = channel in self._local  # made by new_channel() here: valid, and delivered in-process
        if not local:
            validate_channel(channel)
        message = validate_message(message)
        if tracing.enabled:
            with tracing.producer("send", channel):
                await self._send_valid(channel, tracing.outgoing(message), local)
            return
        await self._send_valid(channel, message, local)

    async def _send_valid(self, channel: str, message: dict[str, Any], local: bool) -> None:
        data = self.serializer.dumps(message, self.expiry)
        if local or (is_process_local(channel) and process_of(channel) == self.process_id):
            self._put_local(channel, self.serializer.loads(data), raise_full=True)
            return
        await self._send(channel, data)

    async def receive(self, channel: str) -> dict[str, Any]:
        """Wait for the next message on ``channel``. Cancelling never loses a message."""
        self._check_open()
        queue = self._local.get(channel)
        if queue is None or self._inbox_task is None:  # the hot path is a channel of this process
            validate_channel(channel)
            if not is_process_local(channel):
                return self._received(await self._named_receives.receive(channel))
            if process_of(channel) != self.process_id:
                raise ValueError(f"channel {channel!r} belongs to another process; receive it there")
            self._ensure_tasks()
            queue = self._local_queue(channel)
        while True:
            entry = await queue.get()
            if entry is _CLOSED:  # close() woke us: pass the wake-up on to the next waiter
                queue.put_nowait(_CLOSED)
                self._check_open()
            if entry[0] >= time.time():
                return self._received(entry[1])
            self.dropped += 1  # it expired while it waited here

    @staticmethod
    def _received(message: dict[str, Any]) -> dict[str, Any]:
        """The message as the caller sees it: a sender's trace context leaves it here."""
        if tracing.enabled or tracing.TRACE_KEY in message:
            return tracing.incoming(message)
        return message

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new process-local channel name, readable only in this process."""
        self._check_open()
        validate_group(prefix)
        channel = f"{prefix}.{self.process_id}!{secrets.token_hex(12)}"
        self._local_queue(channel)
        self._ensure_tasks()
        return channel

    def release_channel(self, channel: str) -> None:
        """Forget a process-local channel's buffer (call when its consumer is gone)."""
        self._local.pop(channel, None)

    async def group_add(self, group: str, channel: str) -> None:
        self._check_open()
        validate_group(group)
        validate_channel(channel)
        if is_process_local(channel) and process_of(channel) == self.process_id:
            members = self._local_groups.setdefault(group, {})
            first = not members
            members[channel] = time.time() + self.group_expiry
            if first:
                await self._group_join(group)
            return
        await self._group_add_channel(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self._check_open()
        validate_group(group)
        validate_channel(channel)
        members = self._local_groups.get(group)
        if members is not None and members.pop(channel, None) is not None:
            if not members:
                del self._local_groups[group]
                await self._group_leave(group)
            return
        await self._group_discard_channel(group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Send to every member; members whose channel is full miss this message (Channels semantics)."""
        self._check_open()
        validate_group(group)
        message = validate_message(message)
        if tracing.enabled:
            with tracing.producer("group_send", group):
                await self._group_send_valid(group, tracing.outgoing(message))
            return
        await self._group_send_valid(group, message)

    async def _group_send_valid(self, group: str, message: dict[str, Any]) -> None:
        data = self.serializer.dumps(message, self.expiry)
        await self._group_send(group, data)
        if group in self._local_groups:  # this process's members: served here, like a local send
            self._deliver_group_locally(group, self.serializer.loads(data))

    async def flush(self) -> None:
        """Delete every message and group of this layer's prefix (tests use it)."""
        self._check_open()
        self._local_groups.clear()
        self._parked.clear()
        self._parked_channels.clear()
        for queue in self._local.values():
            while not queue.empty():
                queue.get_nowait()
        self._named_receives.clear()
        await self._flush()

    async def close(self) -> None:
        """Release connections and tasks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for queue in self._local.values():  # wake receive() calls waiting on local channels
            if queue.empty():
                queue.put_nowait(_CLOSED)
        await cancel_and_wait([self._inbox_task, self._refresh_task, *self._named_receives.tasks()])
        await self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> BaseChannelLayer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ local delivery

    def _check_open(self) -> None:
        if self._closed:
            raise LayerClosed(f"{type(self).__name__} is closed; create a new layer")

    def _local_queue(self, channel: str) -> LocalQueue[_Entry]:
        queue = self._local.get(channel)
        if queue is None:
            queue = self._local[channel] = LocalQueue(self.capacity)
        return queue

    def _put_local(self, channel: str, entry: _Entry, *, raise_full: bool = False, park: bool = False) -> None:
        queue = self._local.get(channel)
        if queue is None:
            self.dropped += 1
            return
        if park and self.inbox_backpressure and (queue.full() or channel in self._parked_channels):
            self._parked.append((channel, entry))
            self._parked_channels[channel] += 1
            return
        if queue.full():
            if raise_full:
                raise ChannelFull(f"channel {channel!r} is full ({self.capacity} messages)")
            self.dropped += 1
            return
        queue.put_nowait(entry)

    def _deliver_group_locally(self, group: str, entry: _Entry, *, park: bool = False) -> None:
        """A copy of the decoded message to each local member (senders here get the isolation of
        a remote one: every receiver has its own dict)."""
        members = self._local_groups.get(group)
        if not members:
            return
        now = time.time()
        expires_at, message = entry
        for channel, member_until in list(members.items()):
            if member_until < now:
                del members[channel]
                continue
            self._put_local(channel, (expires_at, dict(message)), park=park)

    def _group_entry(self, group: str, data: bytes) -> bytes:
        """The inbox entry a backend delivers once per process for a group message."""
        entry: bytes = msgpack.packb([_GROUP_ENTRY, group, data], use_bin_type=True)
        return entry

    def _channel_entry(self, channel: str, data: bytes) -> bytes:
        """The inbox entry for a message to one process-local channel."""
        entry: bytes = msgpack.packb([_CHANNEL_ENTRY, channel, data], use_bin_type=True)
        return entry

    def _deliver_entry(self, raw: bytes) -> None:
        """Hand one inbox entry to the local channels it is for. Never raises."""
        try:
            kind, name, data = msgpack.unpackb(raw, raw=False)
            entry: _Entry = self.serializer.loads(data)
        except Exception:
            logger.exception("dropping an undecodable inbox entry")
            self.dropped += 1
            return
        if entry[0] < time.time():
            self.dropped += 1
        elif kind == _GROUP_ENTRY:
            self._deliver_group_locally(name, entry, park=True)
        else:
            self._put_local(name, entry, park=True)

    async def _relieve(self) -> None:
        """Backpressure for inbox readers (``inbox_backpressure``): call between inbox batches.

        Hands parked deliveries to their channels as these make room and returns once none is
        left, so the reader takes nothing more from the broker while a local channel is full (the
        broker-side inbox then fills and senders get ``ChannelFull``). A burst larger than a
        channel's capacity is delivered, not dropped; a channel without room for ``PARK_WAIT``
        seconds (a consumer that stopped reading) loses what waited for it.
        """
        deadline = time.monotonic() + PARK_WAIT
        while self._parked:
            channel, entry = self._parked.popleft()
            if not await self._put_waiting(channel, entry, deadline - time.monotonic()):
                self.dropped += 1
            left = self._parked_channels[channel] - 1  # a flush() meanwhile cleared them all
            if left > 0:
                self._parked_channels[channel] = left
            else:
                self._parked_channels.pop(channel, None)

    async def _put_waiting(self, channel: str, entry: _Entry, timeout: float) -> bool:
        """Put ``entry`` on a local channel, waiting up to ``timeout`` seconds for room."""
        queue = self._local.get(channel)
        if queue is None:
            return False
        if not queue.full():
            queue.put_nowait(entry)
            return True
        if timeout <= 0:
            return False
        try:
            await asyncio.wait_for(queue.put(entry), timeout)
        except TimeoutError:
            return False
        return True

    def _ensure_tasks(self) -> None:
        if self._inbox_task is None:
            self._inbox_task = self._supervise("inbox", lambda: self._consume_inbox(self._deliver_entry))
            self._refresh_task = self._supervise("group refresh", self._refresh_loop)

    def _supervise(self, what: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``run`` forever, restarting it with backoff when the broker fails."""

        async def loop() -> None:
            backoff = Backoff()
            while not self._closed:
                started = time.monotonic()
                try:
                    await run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if time.monotonic() - started > 10:
                        backoff.reset()
                    delay = backoff.next()
                    logger.warning("%s %s failed (%s); retrying in %.2fs", type(self).__name__, what, exc, delay)
                    await asyncio.sleep(delay)

        return asyncio.get_running_loop().create_task(loop(), name=f"{type(self).__name__} {what}")

    async def _refresh_loop(self) -> None:
        """Expire local members past group_expiry and renew this process's broker leases."""
        interval = self.refresh_interval
        while True:
            await asyncio.sleep(interval)
            now = time.time()
            for group, members in list(self._local_groups.items()):
                for channel in [c for c, expires_at in members.items() if expires_at < now]:
                    del members[channel]
                if not members:
                    del self._local_groups[group]
                    await self._group_leave(group)
            if self._local_groups:
                await self._group_refresh(list(self._local_groups))

    @property
    def refresh_interval(self) -> float:
        """How often process leases on groups are renewed; leases last three intervals."""
        return min(self.group_expiry / 3, 10.0)

    def _count_drop(self) -> None:
        self.dropped += 1
