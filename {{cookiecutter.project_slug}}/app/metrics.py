"""Prometheus metrics, counted across every gunicorn worker (multiprocess mode).

Set ``PROMETHEUS_MULTIPROC_DIR`` (gunicorn.conf.py does) and each worker writes its samples
there; ``/metrics`` then sums all workers. Without it, the process's own registry is served.
"""

from __future__ import annotations

import os
import time
from collections import Counter as Tally
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONNECTIONS = Gauge("chat_connections", "Open WebSocket connections", multiprocess_mode="livesum")
FRAMES_IN_TOTAL = Counter("chat_frames_in_total", "Frames received from clients", ["kind"])
FRAMES_OUT_TOTAL = Counter("chat_frames_out_total", "Frames sent to clients", ["kind"])
ERRORS = Counter("chat_errors_total", "Protocol errors and refusals", ["code"])
LAYER_SEND = Histogram(
    "chat_layer_send_seconds", "Channel layer group_send latency",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

SLOW_CONSUMERS = Counter("chat_slow_consumer_closes_total", "Sockets closed with 1013: they stopped reading")
LAYER_DROPPED = Counter("chat_layer_dropped_total", "Layer messages dropped: a local channel full or gone")


class FrameCounter:
    """Frames per kind, tallied in memory and added to a Prometheus counter once a second.

    A multiprocess counter's ``inc()`` costs a ``getpid()`` and an mmap write: per frame, that was
    a tenth of a delivery's CPU. ``render()`` (and shutdown) flush, so this worker's counts are
    exact when it serves ``/metrics``; another worker's lag by at most its last second of frames.
    """

    counters: list[FrameCounter] = []

    def __init__(self, counter: Counter, interval: float = 1.0) -> None:
        self.counter, self.interval = counter, interval
        self._pending: Tally[str] = Tally()
        self._due = 0.0  # the first frame flushes at once: the metric's file opens at startup, not later
        FrameCounter.counters.append(self)

    def inc(self, kind: str) -> None:
        self._pending[kind] += 1
        if time.monotonic() >= self._due:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, Tally()
        self._due = time.monotonic() + self.interval
        for kind, count in pending.items():
            self.counter.labels(kind=kind).inc(count)
        LayerDrops.sample()

    @classmethod
    def flush_all(cls) -> None:
        for counter in cls.counters:
            counter.flush()


class LayerDrops:
    """``layer.dropped`` of this process's layers, added to ``chat_layer_dropped_total`` as it grows
    (sampled when frame counts flush: at most once a second, and on every scrape)."""

    layers: dict[int, tuple[Any, int]] = {}

    @classmethod
    def watch(cls, layer: Any) -> None:
        cls.layers[id(layer)] = (layer, int(layer.dropped))

    @classmethod
    def sample(cls) -> None:
        for key, (layer, seen) in list(cls.layers.items()):
            now = int(layer.dropped)
            if now > seen:
                LAYER_DROPPED.inc(now - seen)
                cls.layers[key] = (layer, now)


FRAMES_IN = FrameCounter(FRAMES_IN_TOTAL)
FRAMES_OUT = FrameCounter(FRAMES_OUT_TOTAL)


def render() -> tuple[bytes, str]:
    FrameCounter.flush_all()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
