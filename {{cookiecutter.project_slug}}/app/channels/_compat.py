"""Every reach into another library's private attributes, one function each.

Each function here leans on something its library does not promise; ``tests/channels/test_compat.py``
checks each one against the installed version, so an upgrade that changes it fails loudly there
instead of quietly in production.
"""

from __future__ import annotations

from typing import Any


def server_transport(send: Any) -> Any:
    """The server transport under an ASGI ``send`` callable, or ``None``.

    ASGI has no "abort" message; uvicorn's protocol objects keep ``.transport``. This follows the
    bound method and the closures (and ``__wrapped__``/``func``) that middleware wrap ``send`` in.
    """
    todo: list[Any] = [send]
    seen: set[int] = set()
    while todo and len(seen) < 32:
        obj = todo.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        transport = getattr(getattr(obj, "__self__", None), "transport", None)
        if callable(getattr(transport, "abort", None)):
            return transport
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
