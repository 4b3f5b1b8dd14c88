"""Prometheus metrics, counted across every gunicorn worker (multiprocess mode).

Set ``PROMETHEUS_MULTIPROC_DIR`` (gunicorn.conf.py does) and each worker writes its samples
there; ``/metrics`` then sums all workers. Without it, the process's own registry is served.
"""

from __future__ import annotations

import os

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
FRAMES_IN = Counter("chat_frames_in_total", "Frames received from clients", ["kind"])
FRAMES_OUT = Counter("chat_frames_out_total", "Frames sent to clients", ["kind"])
ERRORS = Counter("chat_errors_total", "Protocol errors and refusals", ["code"])
LAYER_SEND = Histogram(
    "chat_layer_send_seconds", "Channel layer group_send latency",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
