"""Every reach into another library's private attributes, one function each.

Each function here leans on something its library does not promise; ``tests/channels/test_compat.py``
checks each one against the installed version, so an upgrade that changes it fails loudly there
instead of quietly in production.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def server_transport(send: Any) -> Any:
    """The server transport under an ASGI ``send`` callable, or ``None``.

    ASGI has no "abort" message; uvicorn's protocol objects keep ``.transport``.
    """
    protocol = _server_protocol(send)
    return None if protocol is None else protocol.transport


def accepted(send: Any) -> tuple[Any, Callable[[bytes], bool] | None]:
    """What a consumer keeps of a socket uvicorn has just accepted, found in one walk of ``send``: the
    server transport and a raw frame writer (each ``None`` under another server or protocol); and
    uvicorn's parsed handshake, no longer needed, is let go."""
    protocol = _server_protocol(send)
    if protocol is None:
        return None, None
    _release_handshake(protocol)
    return protocol.transport, _raw_frame_writer(protocol)


def _raw_frame_writer(protocol: Any) -> Callable[[bytes], bool] | None:
    """A function that writes a whole, ready-made server frame to uvicorn's ``websockets-sansio``
    socket, or ``None`` (another protocol): the caller then sends through ASGI.

    A server frame is not masked, so one frame's bytes serve every socket it goes to; going around
    ASGI saves each socket the per-frame work of uvicorn and websockets (encode, frame, join), which
    is most of a broadcast's cost. The function returns False, writing nothing, once the
    connection is no longer open (a close sent or received, the client gone).
    """
    conn: Any = getattr(protocol, "conn", None)
    if not all(hasattr(protocol, name) for name in ("close_sent", "disconnected")) \
            or type(conn).__module__ != "websockets.server":
        return None
    from websockets.protocol import State

    transport = protocol.transport

    def write(frame: bytes) -> bool:
        if protocol.close_sent or protocol.disconnected or conn.state is not State.OPEN or transport.is_closing():
            return False
        transport.write(frame)
        return True

    return write


def _release_handshake(protocol: Any) -> None:
    """Let go of the handshake uvicorn's ``websockets-sansio`` protocol keeps after it is done: the
    parsed request and response (their headers twice over, ~4 KiB a socket). The ASGI scope keeps
    the request's headers; neither object is read again once the socket is accepted."""
    if getattr(protocol, "handshake_complete", False) and hasattr(protocol, "response"):
        protocol.request = protocol.response = None


def lean_websocket_protocol() -> type:
    """uvicorn's ``websockets-sansio`` protocol with a lighter receive queue.

    The protocol keeps its incoming ASGI events in an ``asyncio.Queue`` (four deques and an Event,
    ~3 KiB a socket); it only calls ``put_nowait``, ``get`` and ``empty``, which ``LocalQueue``
    has. Given to uvicorn as its ``ws`` class (app/server.py).
    """
    import sys

    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    from .local import LocalQueue

    class LeanWebSocketsSansIOProtocol(WebSocketsSansIOProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = LocalQueue(sys.maxsize)  # type: ignore[assignment]

    return LeanWebSocketsSansIOProtocol


def _server_protocol(send: Any) -> Any:
    """The server protocol object (it has ``.transport``) under an ASGI ``send``: this follows the bound
    method and the closures (and ``__wrapped__``/``func``) that middleware wrap ``send`` in."""
    todo: list[Any] = [send]
    seen: set[int] = set()
    while todo and len(seen) < 32:
        obj = todo.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        owner = getattr(obj, "__self__", None)
        if callable(getattr(getattr(owner, "transport", None), "abort", None)):
            return owner
        todo.extend(cell.cell_contents for cell in getattr(obj, "__closure__", None) or () if _filled(cell))
        todo.extend(getattr(obj, name) for name in ("__wrapped__", "func") if hasattr(obj, name))
    return None


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises ValueError
    except ValueError:
        return False
    return True


def websocket_send(websocket: Any) -> Any:
    """Starlette's ``WebSocket`` keeps the ASGI ``send`` it was given as ``_send``."""
    return websocket._send


def cluster_needs_initialize(cluster: Any) -> bool:
    """Whether redis-py's ``RedisCluster`` has not loaded its slot map yet (``_initialize``)."""
    return bool(cluster._initialize)


def nats_take_queued(sub: Any) -> Any:
    """A message already in a nats-py subscription's queue, or ``None``, with the bookkeeping
    ``next_msg()`` would do. ``next_msg()`` costs a uuid4, a task and a timer per call; taking
    what is already queued lets a burst be handled in one go, so its acks leave in one write."""
    queue = sub._pending_queue
    if queue.empty():
        return None
    msg = queue.get_nowait()
    sub._pending_size -= len(msg.data)
    queue.task_done()
    return msg


def nats_has_queued(sub: Any) -> bool:
    """Whether a nats-py subscription holds messages not yet taken."""
    return not sub._pending_queue.empty()
