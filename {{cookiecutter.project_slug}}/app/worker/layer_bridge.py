"""One channel layer per worker process, driven from sync Celery tasks through one event loop thread.

``worker_process_init`` starts the bridge in each pool process, ``worker_process_shutdown`` closes it;
tasks call :func:`get_bridge` and ``bridge.run(coro)``. Creating a layer (and its broker
connections) per task call would cost a connect per message and leak under load.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..channels import BaseChannelLayer, get_channel_layer_from_env

logger = logging.getLogger("app.worker")
T = TypeVar("T")


class LayerBridge:
    """A layer living on a private event loop in a daemon thread."""

    def __init__(self, factory: Callable[[], BaseChannelLayer] = get_channel_layer_from_env,
                 timeout: float = 10) -> None:
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="layer-bridge", daemon=True)
        self._thread.start()

        async def make() -> BaseChannelLayer:
            return factory()

        self.layer: BaseChannelLayer = self.run(make())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the bridge's loop; on timeout it is cancelled and ``TimeoutError`` raised."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"channel layer operation took over {timeout or self.timeout}s") from None
        except BaseException:
            future.cancel()  # e.g. SoftTimeLimitExceeded raised in this thread
            raise

    def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.run(self.layer.group_send(group, message))

    def close(self) -> None:
        try:
            self.run(self.layer.close(), timeout=self.timeout)
        except Exception:
            logger.exception("closing the channel layer failed")
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self.loop.close()


_bridge: LayerBridge | None = None
_lock = threading.Lock()


def start_bridge(timeout: float = 10) -> LayerBridge:
    """This process's bridge, created on first use (``worker_process_init`` does it early)."""
    global _bridge
    with _lock:
        if _bridge is None:
            _bridge = LayerBridge(timeout=timeout)
            logger.info("layer bridge ready: %s", type(_bridge.layer).__name__)
        return _bridge


def get_bridge() -> LayerBridge:
    if _bridge is not None:
        return _bridge
    from .settings import get_job_settings

    return start_bridge(get_job_settings().layer_timeout_seconds)


def stop_bridge() -> None:
    global _bridge
    with _lock:
        bridge, _bridge = _bridge, None
    if bridge is not None:
        bridge.close()
        logger.info("layer bridge closed")
