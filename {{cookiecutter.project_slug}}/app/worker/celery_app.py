"""The Celery application: ``celery -A app.worker.celery_app worker`` (and ``beat``).

Configured only from the environment (see settings.py and docs/celery.md). Each pool process
opens one channel layer at ``worker_process_init`` and closes it at ``worker_process_shutdown``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init, worker_process_shutdown

from .. import error_reporting, telemetry
from ..logs import configure_logging
from ..settings import get_settings
from .layer_bridge import start_bridge, stop_bridge
from .settings import celery_urls, get_job_settings

logger = logging.getLogger("app.worker")


def make_celery() -> Celery:
    broker, backend = celery_urls()
    jobs = get_job_settings()
    app = Celery("chat", broker=broker, backend=backend, include=["app.worker.tasks"])
    app.conf.update(
        task_default_queue=jobs.queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_soft_time_limit=jobs.soft_time_limit_seconds,
        task_time_limit=jobs.time_limit_seconds,
        result_expires=86400,
        result_extended=True,
        broker_connection_retry_on_startup=True,
    )
    if broker.startswith(("redis", "rediss")):
        # Redis redelivers an unacknowledged (acks_late) task after this: longer than any task runs.
        app.conf.broker_transport_options = {"visibility_timeout": max(600, int(jobs.time_limit_seconds) * 4)}
    if jobs.stats_interval_seconds > 0:
        app.conf.beat_schedule = {
            "room-stats": {"task": "app.worker.tasks.post_room_stats", "schedule": jobs.stats_interval_seconds,
                           "options": {"queue": jobs.queue, "expires": jobs.stats_interval_seconds}},
        }
    instrument_tasks()  # the web process: tasks it queues carry its trace (no-op untraced)
    return app


def instrument_tasks() -> None:
    """Task spans, with the context carried from the process that queued the task (when tracing)."""
    if telemetry.configured():
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument()


celery = make_celery()


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Log like the web service: ``APP_LOG_LEVEL``, JSON lines in production (``APP_LOG_JSON``)."""
    configure_logging(get_settings())


@worker_process_init.connect
def _open_layer(**_: Any) -> None:
    if error_reporting.wanted():
        from sentry_sdk.integrations.celery import CeleryIntegration

        error_reporting.configure(integrations=[CeleryIntegration()])
    if telemetry.configure(service_name="chat-worker"):  # per forked process: span exporters own a thread
        instrument_tasks()
    start_bridge(get_job_settings().layer_timeout_seconds)


@worker_process_shutdown.connect
def _close_layer(**_: Any) -> None:
    stop_bridge()
    telemetry.shutdown()
    error_reporting.flush()
