"""OpenTelemetry for the layer: a span per send, one per delivery, the sender's context in the message.

Off, and close to free, until :func:`enable` is called (``app/telemetry.py`` does so when the
``OTEL_*`` variables ask for tracing). The context travels under ``__asgi_trace__``, a key that
``validate_message`` refuses from callers, and leaves the message before ``receive()`` returns it;
the receiving task keeps it (a context variable), so the delivery span a consumer opens around its
handler continues the sender's trace: a ``group_send`` on one worker and its deliveries on the
others are one trace.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

TRACE_KEY = "__asgi_trace__"
#: Whether spans are made; a module global, read on every send.
enabled = False
_received: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("channels_trace", default=None)


def enable() -> None:
    """Make spans from now on (needs ``opentelemetry-api``; the provider is the caller's business)."""
    global enabled
    import opentelemetry.trace  # noqa: F401 - fail here, not on the first send

    enabled = True


def disable() -> None:
    global enabled
    enabled = False


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer("app.channels")


@contextlib.contextmanager
def producer(operation: str, destination: str) -> Iterator[None]:
    """The span of one ``send`` / ``group_send`` (only call while ``enabled``)."""
    from opentelemetry.trace import SpanKind

    attributes = {"messaging.system": "channels", "messaging.operation.name": operation,
                  "messaging.destination.name": destination}
    with _tracer().start_as_current_span(f"{operation} {destination}", kind=SpanKind.PRODUCER,
                                         attributes=attributes):
        yield


def outgoing(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` with the current context attached (a copy: the caller's dict is left alone)."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {**message, TRACE_KEY: carrier} if carrier else message


def incoming(message: dict[str, Any]) -> dict[str, Any]:
    """Take the sender's context out of a received message and keep it for :func:`delivery`."""
    _received.set(message.pop(TRACE_KEY, None))
    return message


@contextlib.contextmanager
def delivery(kind: str) -> Iterator[None]:
    """The span of handling one received message, a child of its sender's span."""
    if not enabled:
        yield
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    parent = propagate.extract(_received.get() or {})
    with _tracer().start_as_current_span(f"deliver {kind}", context=parent, kind=SpanKind.CONSUMER,
                                         attributes={"messaging.system": "channels",
                                                     "messaging.operation.name": "process"}):
        yield


@contextlib.contextmanager
def frame(kind: str) -> Iterator[None]:
    """The span of handling one client WebSocket frame (a trace of its own)."""
    if not enabled:
        yield
        return
    from opentelemetry.trace import SpanKind

    with _tracer().start_as_current_span(f"websocket frame {kind}", kind=SpanKind.SERVER):
        yield
