"""Stream administration: create the layer's streams and KV buckets once, check existing ones.

Background loops never create streams: after ``flush()`` they wait until a foreground call does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...exceptions import BrokerUnavailable, ConfigurationError
from .connection import NATSConnection

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import StreamConfig

#: The stream settings this layer chooses: an existing stream that differs in one is a ConfigurationError.
STREAM_FIELDS = ("subjects", "retention", "discard", "discard_new_per_subject", "max_msgs_per_subject", "max_age",
                 "storage", "num_replicas", "duplicate_window", "allow_direct", "deny_delete", "allow_rollup_hdrs")


class Restart(Exception):
    """A pull loop lost its consumer (deleted, flushed, or the connection went away)."""


class Streams:
    """Creates ``configs()`` (idempotent); ``generation`` counts flushes, so loops restart after one."""

    def __init__(self, conn: NATSConnection, configs: Callable[[], list[StreamConfig]],
                 is_closed: Callable[[], bool]) -> None:
        self.conn = conn
        self._configs = configs
        self._is_closed = is_closed
        self._lock = asyncio.Lock()
        self._ensured = False
        self.generation = 0

    async def ensure(self, *, force: bool = False) -> None:
        """Create the streams and buckets; a differing existing one is a ConfigurationError."""
        if self._ensured and not force:
            return
        generation = self.generation
        js = await self.conn.connect()
        async with self._lock:
            if self._ensured and not force:
                return
            if generation != self.generation:  # never recreate what a concurrent flush() just deleted
                raise BrokerUnavailable("the layer was flushed while this call was in flight; retry it")
            for config in self._configs():
                await self._add(js, config)
            self._ensured = True

    async def _add(self, js: JetStreamContext, config: StreamConfig) -> None:
        """Create one stream. A concurrent creation by another layer answers 10058 or 10065 although the
        configurations agree; only a difference in the fields this layer sets is a ConfigurationError."""
        errors, js_errors = self.conn.lib.errors, self.conn.lib.js_errors
        refusal, unanswered = "", None
        for attempt in range(5):
            try:
                await js.add_stream(config)
                return
            except js_errors.BadRequestError as exc:
                # 10058: name already in use with another configuration; 10065: subjects overlap
                if exc.err_code not in (10058, 10065):
                    raise ConfigurationError(f"NATS refused stream {config.name!r}: {exc.description}") from exc
                refusal = exc.description
            except (errors.TimeoutError, errors.NoRespondersError, js_errors.ServiceUnavailableError) as exc:
                # a replicated stream's raft group forming on a busy cluster can outlast one request: ask again
                unanswered = exc
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            try:
                existing: Any = (await js.stream_info(str(config.name))).config
            except js_errors.NotFoundError:
                existing = config  # not there yet (another layer is creating it) or other subjects overlap
            diff = [f"{f}={getattr(existing, f)!r} (wanted {getattr(config, f)!r})" for f in STREAM_FIELDS
                    if getattr(config, f) is not None and getattr(existing, f) != getattr(config, f)]
            if diff:
                raise ConfigurationError(
                    f"NATS stream {config.name!r} exists with a different configuration: {'; '.join(diff)}."
                    " Align CONFIG (capacity, inbox_capacity, expiry, group_expiry, replicas) with the running layers,"
                    " or delete the stream (nats stream rm) so it is recreated."
                )
            await asyncio.sleep(0.05 * (attempt + 1))
        if not refusal:
            raise BrokerUnavailable(f"NATS JetStream did not answer creating {config.name!r}: {unanswered!r}")
        raise ConfigurationError(f"NATS refused stream {config.name!r}: {refusal}")

    async def exists(self, name: str) -> str | None:
        """The stream's creation stamp, or None when it does not exist (never creates it)."""
        js = await self.conn.connect()
        try:
            info = await js.stream_info(name)
        except self.conn.lib.js_errors.NotFoundError:
            return None
        return str(info.created)

    async def wait_for(self, name: str) -> bool:
        """Poll until ``name`` exists (a foreground call creates it); False once the layer closed.

        Also checks ``closed`` itself: nats-py can swallow a cancellation inside a publish.
        """
        while not self._is_closed():
            if await self.exists(name) is not None:
                return True
            await asyncio.sleep(0.25)
        return False

    def check(self, generation: int) -> None:
        """Raise in a loop started at ``generation``: CancelledError once closed, Restart after a flush."""
        if self._is_closed():
            raise asyncio.CancelledError()
        if generation != self.generation:
            raise Restart("the layer was flushed")

    async def delete(self, names: list[str], before: Callable[[], Any] | None = None) -> None:
        """Delete streams (flush): an ensure in progress finishes first, a later one sees the new generation."""
        js = await self.conn.connect()
        async with self._lock:
            self.generation += 1
            self._ensured = False
            if before is not None:
                await before()
            for name in names:
                with contextlib.suppress(self.conn.lib.js_errors.NotFoundError):
                    await js.delete_stream(name)
